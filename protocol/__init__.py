"""jobwire's wire protocol, sans-I/O: nothing here touches a socket or imports asyncio.

``protocol/SPEC.md`` is the contract; this package implements it for both the broker and the
Python client, in one sentence: ``codec`` turns bytes into msgpack messages and back, ``messages``
builds and takes apart the four kinds of message, ``operations`` declares each operation once
(request fields with their checks, reply parser, whether the reply waits for the commit) and
derives both sides' encoders and parsers from that, ``model`` and ``replies`` hold the values
requests and replies carry (each with its wire form both ways), ``checks`` the limits and field
checks, and ``errors`` the wire error codes. Import each name from the module that defines it.
"""
