"""kombu's Redis transport, made to report a channel whose connection is gone as the
lost connection it is.

When the broker goes away the consumer collects its connection: kombu unsets the
transport's client (and, for a channel it closes, the channel's transport). A task
that ends after that still acknowledges its message on its channel (from the worker's
event loop, with `acks_late`), and kombu's Redis channel, building a new connection
pool from a client that is None, fails with `AttributeError: 'NoneType' object has no
attribute 'hostname'`. Celery expects a connection error there (it logs "Couldn't ack"
and goes on); an AttributeError instead escapes the event loop and stops the worker.
Here it is a `ConnectionError` (an OSError, which kombu counts among the transport's
connection errors). The acknowledgement is lost either way: Redis delivers the message
again after the visibility timeout, and its job's claim turns the second delivery away.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["SCHEMES", "TRANSPORT", "Channel", "Transport"]

#: Broker URL schemes this transport serves (kombu's Redis transport, TLS or not).
SCHEMES = ("redis", "rediss")
#: The value of Celery's `broker_transport` that selects it.
TRANSPORT = "workers.broker_transport:Transport"


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        # closed channel: no transport; collected connection: a transport without client
        transport = self.connection
        if transport is None or transport.client is None:
            raise ConnectionError("the broker channel's connection is gone")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
