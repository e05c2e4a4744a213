"""The Pusher and Ably protocol rules as pure functions: standard library only, no I/O, clock or randomness."""
