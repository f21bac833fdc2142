"""jobwire's wire protocol, sans-I/O: nothing here touches a socket or imports asyncio.

``protocol/SPEC.md`` is the contract; this package implements it for both the broker and the
Python client. ``codec`` turns bytes into msgpack messages and back; ``messages`` builds and takes
apart the four kinds of message; ``operations`` declares each operation once (request fields and
their checks, reply, durability), from which both sides' encoders and parsers come; ``model``
holds the values those carry, each with its wire form both ways; ``checks`` holds the limits and
the field checks; ``errors`` the wire error codes. Import names from the module that defines them.
"""
