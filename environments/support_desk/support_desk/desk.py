"""The shop's database, the agent's tools over it, and the support policy.

The database (`database.json`: customers, products, orders, refunds of an invented shop)
is a plain dict; each rollout works on its own deep copy. The tools refuse only what the
data forbids (an unknown order, refunding an order twice, redirecting a delivered parcel);
the *policy* (who may change what, refund windows) is the agent's to apply, as a human
agent's would be, so the tools let it break the policy, and `policy_problem` says when it
did. Every write is recorded in the rollout's `audit` with the policy problem it broke.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from importlib.resources import files
from typing import Any

REFUND_WINDOW_DAYS = 30
Db = dict[str, Any]


def load_database() -> Db:
    return json.loads(files(__package__).joinpath("database.json").read_text(encoding="utf-8"))


def find_order(db: Db, order_id: int) -> dict[str, Any]:
    for order in db["orders"]:
        if order["id"] == order_id:
            return order
    raise LookupError(f"no order {order_id}")


def customer_by_email(db: Db, email: str) -> dict[str, Any] | None:
    key = email.strip().lower()
    return next((c for c in db["customers"] if c["email"] == key), None)


def days_since_delivery(db: Db, order: dict[str, Any]) -> int:
    return (dt.date.fromisoformat(db["today"]) - dt.date.fromisoformat(order["delivered_on"])).days


def policy_problem(db: Db, tool: str, args: dict[str, Any], customer_email: str) -> str | None:
    """Why the policy forbids this write for the customer writing from `customer_email`, or None."""
    order = find_order(db, args["order_id"])
    customer = customer_by_email(db, customer_email)
    if customer is None:
        return f"no account has the email {customer_email}"
    if order["customer_id"] != customer["id"]:
        return f"order {order['id']} is not on {customer_email}'s account"
    if tool == "issue_refund":
        if order["status"] != "delivered":
            return f"order {order['id']} is {order['status']}; only delivered orders are refunded"
        if days_since_delivery(db, order) > REFUND_WINDOW_DAYS:
            return f"order {order['id']} was delivered {days_since_delivery(db, order)} days ago, more than {REFUND_WINDOW_DAYS}"
    elif order["status"] != "processing":
        return f"order {order['id']} is {order['status']}; only processing orders can be changed or cancelled"
    return None


def _audit(db: Db, audit: dict[str, Any], tool: str, args: dict[str, Any]) -> None:
    problem = policy_problem(db, tool, args, audit["customer_email"])
    audit["actions"].append({"tool": tool, "args": args, "policy_problem": problem})


# -- the tools (`db` and `audit` are hidden from the model) -----------------------------------


def find_customer(email: str, db: Db) -> dict[str, Any]:
    """Look up a customer by the email address on their account.

    Args:
        email: the customer's email address.
    """
    customer = customer_by_email(db, email)
    if customer is None:
        raise LookupError(f"no customer with the email {email!r}")
    orders = [{"id": o["id"], "status": o["status"], "placed_on": o["placed_on"]} for o in db["orders"] if o["customer_id"] == customer["id"]]
    return {**customer, "orders": orders}


def get_order(order_id: int, db: Db) -> dict[str, Any]:
    """Look up an order: its customer, items, total, status, dates and shipping address.

    Args:
        order_id: the order number, e.g. 1001.
    """
    order = copy.deepcopy(find_order(db, order_id))
    names = {p["sku"]: p["name"] for p in db["products"]}
    for item in order["items"]:
        item["name"] = names[item["sku"]]
    order["refunds"] = [r for r in db["refunds"] if r["order_id"] == order_id]
    return order


def issue_refund(order_id: int, reason: str, db: Db, audit: dict[str, Any]) -> str:
    """Refund the full total of an order to the customer and mark the order refunded.

    Args:
        order_id: the order number.
        reason: why the customer gets a refund, in a few words.
    """
    order = find_order(db, order_id)
    if order["status"] in ("refunded", "cancelled") or any(r["order_id"] == order_id for r in db["refunds"]):
        raise ValueError(f"order {order_id} is {order['status']} and cannot be refunded")
    _audit(db, audit, "issue_refund", {"order_id": order_id, "reason": reason})
    refund = {"id": f"R{len(db['refunds']) + 1}", "order_id": order_id, "amount": order["total"], "reason": reason, "date": db["today"]}
    db["refunds"].append(refund)
    order["status"] = "refunded"
    return f"Refunded {order['total']:.2f} for order {order_id} (refund {refund['id']})."


def update_address(order_id: int, street: str, city: str, postcode: str, db: Db, audit: dict[str, Any]) -> str:
    """Change the shipping address of an order.

    Args:
        order_id: the order number.
        street: house number and street, e.g. "14 Alder Road".
        city: the city.
        postcode: the postcode.
    """
    order = find_order(db, order_id)
    if order["status"] in ("delivered", "cancelled", "refunded"):
        raise ValueError(f"order {order_id} is {order['status']}; its address can no longer change")
    _audit(db, audit, "update_address", {"order_id": order_id, "street": street, "city": city, "postcode": postcode})
    order["shipping_address"] = {"street": street, "city": city, "postcode": postcode}
    return f"Order {order_id} will be shipped to {street}, {city}, {postcode}."


def cancel_order(order_id: int, db: Db, audit: dict[str, Any]) -> str:
    """Cancel an order that has not been delivered.

    Args:
        order_id: the order number.
    """
    order = find_order(db, order_id)
    if order["status"] in ("delivered", "cancelled", "refunded"):
        raise ValueError(f"order {order_id} is {order['status']} and cannot be cancelled")
    _audit(db, audit, "cancel_order", {"order_id": order_id})
    order["status"] = "cancelled"
    return f"Order {order_id} is cancelled."


TOOLS = [find_customer, get_order, issue_refund, update_address, cancel_order]
WRITES = {f.__name__: f for f in (issue_refund, update_address, cancel_order)}


# -- the expected final state ---------------------------------------------------------------


def apply(db: Db, actions: list[dict[str, Any]], customer_email: str = "") -> Db:
    """A copy of `db` after the writes `actions` ({"tool", "args"}), in order."""
    db = copy.deepcopy(db)
    audit = {"customer_email": customer_email, "actions": []}
    for action in actions:
        WRITES[action["tool"]](**action["args"], db=db, audit=audit)
    return db


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).casefold()).split())


def digest(db: Db) -> Db:
    """What must match for the final state to be right: everything, except that free-text
    refund reasons are left out and addresses compare without case and punctuation."""
    db = copy.deepcopy(db)
    for order in db["orders"]:
        order["shipping_address"] = {k: _norm(v) for k, v in order["shipping_address"].items()}
    for refund in db["refunds"]:
        refund.pop("reason", None)
    return db
