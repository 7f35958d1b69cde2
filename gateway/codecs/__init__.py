"""The gateway's one internal language and the codecs of each wire format.

A client's body is decoded once into the internal request (`request.py`) by the codec of
its format; a provider's body is encoded from it by the codec of the upstream's format
(`<format>/request.py`), so an Anthropic request served by a Gemini key goes Anthropic →
internal → Gemini, and whatever the two formats share survives the trip. Replies and
stream events are typed the same way (`reply.py`, `events.py`): a provider's reply is
decoded once by its format's codec (`<format>/reply.py`, `<format>/stream.py`) and each
client dialect encodes it in its own format.
"""
