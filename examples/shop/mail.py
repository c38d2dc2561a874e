"""Mailer: the shop's emails, composed and sent over real SMTP."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate

from examples.shop.db import Order
from examples.shop.money import dollars


class Mailer:
    """Sends one message per call to the configured SMTP server."""

    def __init__(self, host: str, port: int, sender: str, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout

    def send(self, message: EmailMessage) -> str:
        """Hand the message to the SMTP server; its Message-ID is returned for the job's result."""
        message["From"] = self.sender
        message["Date"] = formatdate(localtime=False)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.send_message(message)
        return str(message["Message-ID"])


def confirmation(order: Order) -> EmailMessage:
    """"Order confirmed", with every line and the total."""
    lines = [f"  {i.quantity} x {i.name} ({dollars(i.unit_price_cents)})  {dollars(i.total_cents)}" for i in order.items]
    body = "\n".join(
        [f"Thank you for your order {order.id}.", "", *lines, "", f"Total: {dollars(order.total_cents)}", "",
         "Your invoice follows shortly."]
    )
    return message(order, "confirmation", f"Order {order.id} confirmed", body)


def followup(order: Order) -> EmailMessage:
    body = f"How is your order {order.id} working out for you? Reply to this email and tell us.\n"
    return message(order, "followup", f"How was your order {order.id}?", body)


def message(order: Order, kind: str, subject: str, body: str) -> EmailMessage:
    """A message whose Message-ID is fixed per order and kind, so a repeat send can be recognised."""
    msg = EmailMessage()
    msg["To"] = order.email
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{order.id}.{kind}@shop.example>"
    msg["X-Shop-Order"] = order.id
    msg["X-Shop-Kind"] = kind
    msg.set_content(body)
    return msg
