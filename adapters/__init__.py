"""Provider adapters: one module per provider behind one small interface."""
