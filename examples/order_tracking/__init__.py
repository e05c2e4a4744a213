"""The restaurant order-tracking system: customers order, the kitchen display gets the order live, and the customer's
page and the delivery staff's page follow its status without a refresh.

    python -m examples.order_tracking            # an emulator on 127.0.0.1:6001 and the app on http://127.0.0.1:8000
    RELAY_URL=pusher://KEY:SECRET@eu/apps/ID python -m examples.order_tracking   # the same app on Pusher
"""

from examples.order_tracking.app import MENU, Order, OrderStore, create_app

__all__ = ["MENU", "Order", "OrderStore", "create_app"]
