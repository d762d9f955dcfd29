"""Benchmark upstream: answers a realistic ~1 KB reservation JSON (GET) or echoes (POST)."""

import sys

import orjson
import uvloop
from aiohttp import web

RESERVATION = orjson.dumps(
    {
        "id": "7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b",
        "confirmation": "HX-2026-118832",
        "status": "confirmed",
        "hotel_id": "b1f0c7d2-0000-4000-8000-000000000042",
        "guest": {
            "id": "c3d4e5f6-1111-4222-8333-444455556666",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "phone": "+44 20 7946 0000",
            "loyalty": {"program": "stars", "tier": "gold", "number": "ST-99812"},
        },
        "stay": {
            "arrival": "2026-12-01",
            "departure": "2026-12-04",
            "nights": 3,
            "adults": 2,
            "children": 0,
        },
        "rooms": [
            {
                "room_type": "DLX-K",
                "rate_plan": "BAR",
                "room_id": "412",
                "nightly": [
                    {"date": "2026-12-01", "amount": "189.00"},
                    {"date": "2026-12-02", "amount": "189.00"},
                    {"date": "2026-12-03", "amount": "209.00"},
                ],
            }
        ],
        "totals": {"currency": "EUR", "room": "587.00", "tax": "58.70", "total": "645.70"},
        "source": {"channel": "booking_engine", "external_id": "BE-5521-77"},
        "notes": "Late arrival, around 23:00. Quiet room requested, high floor if possible.",
        "created_at": "2026-11-20T10:11:12Z",
        "updated_at": "2026-11-21T08:09:10Z",
    }
)


async def reservation(request: web.Request) -> web.Response:
    if request.method == "POST":
        return web.Response(body=await request.read(), content_type="application/json")
    return web.Response(body=RESERVATION, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", reservation)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
