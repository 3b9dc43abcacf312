"""Realistic mail for simulators, the demo and benchmarks: verification codes with links,
receipts with a PDF, newsletters, HTML-only notifications."""

from __future__ import annotations

import random
from typing import Any

_BRANDS = (
    ("GitHub", "noreply@github.com"),
    ("Stripe", "receipts@stripe.com"),
    ("Notion", "team@makenotion.com"),
    ("Linear", "notifications@linear.app"),
    ("Figma", "no-reply@figma.com"),
    ("Vercel", "notifications@vercel.com"),
)


def _verification(rng: random.Random, name: str, sender: str) -> dict[str, Any]:
    code = f"{rng.randrange(10**6):06d}"
    link = f"https://{sender.partition('@')[2]}/verify?token={rng.getrandbits(128):032x}"
    text = (
        f"Your {name} verification code is {code}.\n\n"
        f"Or confirm your address with this link:\n{link}\n\nThe code expires in 10 minutes."
    )
    page = (
        f"<html><body><p>Your {name} verification code is <strong>{code}</strong>.</p>"
        f'<p><a href="{link}">Verify your email</a></p>'
        "<p>The code expires in 10 minutes.</p></body></html>"
    )
    subject = rng.choice((f"{code} is your {name} verification code", "Verify your email"))
    return {"subject": subject, "text_body": text, "html_body": page}


def _receipt(rng: random.Random, name: str, sender: str) -> dict[str, Any]:
    number, amount = rng.randrange(1000, 9999), rng.randrange(500, 50000) / 100
    text = f"Thanks for your payment of ${amount:.2f} to {name}.\nReceipt #{number} is attached."
    pdf = f"%PDF-1.4\n% {name} receipt {number}: ${amount:.2f}\n%%EOF\n".encode()
    return {
        "subject": f"Your receipt from {name} #{number}",
        "text_body": text,
        "attachments": [(f"receipt-{number}.pdf", "application/pdf", pdf)],
    }


def _newsletter(rng: random.Random, name: str, sender: str) -> dict[str, Any]:
    topics = rng.sample(["new dashboard", "faster builds", "dark mode", "API v2", "pricing"], 3)
    blog = f"https://{sender.partition('@')[2]}/blog"
    lines = [f"- {topic.capitalize()}: read more at {blog}" for topic in topics]
    text = f"What's new at {name} this month\n\n" + "\n".join(lines) + "\n\nUnsubscribe anytime."
    items = "".join(f"<li>{topic.capitalize()}</li>" for topic in topics)
    page = f"<html><body><h1>What's new at {name}</h1><ul>{items}</ul></body></html>"
    return {"subject": f"{name} monthly: {topics[0]}", "text_body": text, "html_body": page}


def _notification(rng: random.Random, name: str, sender: str) -> dict[str, Any]:
    who = rng.choice(("alice", "bob", "chen", "dana"))
    event = rng.choice(("commented on your issue", "mentioned you", "shared a file with you"))
    page = (
        f"<html><head><style>p{{color:#333}}</style></head><body><p><b>{who}</b> {event} "
        f'on {name}.</p><p><a href="https://{sender.partition("@")[2]}/inbox">Open</a></p>'
        "</body></html>"
    )
    return {"subject": f"{who} {event}", "html_body": page}


def realistic_message(rng: random.Random) -> dict[str, Any]:
    """A plausible mail: ``sender``, ``from_name``, ``subject``, bodies, ``attachments``
    (the keyword arguments of ``MailTdSim.add_message``)."""
    make = rng.choice((_verification, _receipt, _newsletter, _notification))
    name, sender = rng.choice(_BRANDS)
    return {"sender": sender, "from_name": name, **make(rng, name, sender)}
