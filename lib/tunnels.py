"""Secure tunnelling: runs the tunnel proxy (`localproxy`) in destination mode.

For each thing of --tunnelmappings it subscribes to
`$aws/things/THING/tunnels/notify`; a notification with clientMode
`destination` (or an `open-tunnel` command) starts the proxy with the access
token and region in its environment (AWSIOT_TUNNEL_ACCESS_TOKEN,
AWSIOT_TUNNEL_REGION), so the token shows neither in `ps` nor in our logs,
and `-d SVC=PORT,...` for the requested services that are mapped, plus
`-c DIR` with --tunnelcadir. One proxy per thing: a new request stops the
running one first (children.stop_soon: SIGTERM to its process group,
SIGKILL to what is left of the group after its grace); a repeat of the
request that started the running proxy (AWS may deliver a QoS 1 message
twice) is ignored, since restarting would spend the
single-use token. The proxy runs for as long as the tunnel lives, so it is
started with children.launch rather than children.run's timeout (so it
still dies with the daemon, and counts among the children running that
--status-file shows); its exit is posted to the loop.
This module does not speak the tunnel protocol.
"""

import hashlib
import json
import logging
import os
import re
import subprocess

from . import children

log = logging.getLogger("chariotd")

THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


class TunnelRequestError(ValueError):
    """A tunnel request this device cannot act on; the message says why (never the token)."""


def start(daemon):
    for thing in daemon.options.tunnelmappings:
        if not THING_NAME.fullmatch(thing):
            log.error("--tunnelmappings: %r is not a valid thing name", thing)
            daemon.exit(2)
            return None
    tunnels = Tunnels(daemon.loop, daemon.options.tunnelmappings, daemon.options.tunnelproxy,
                      daemon.options.tunnelcadir)
    for thing in daemon.options.tunnelmappings:
        daemon.connection.subscribe("$aws/things/%s/tunnels/notify" % thing,
                                    lambda _topic, payload, thing=thing:
                                    tunnels.notified(thing, payload))
    return tunnels


class Proxy:
    __slots__ = ("proc", "token_digest")

    def __init__(self, proc, token_digest):
        self.proc = proc
        self.token_digest = token_digest


class Tunnels:
    def __init__(self, loop, mappings, proxy_program, cadir):
        self._loop = loop
        self._mappings = mappings
        self._program = proxy_program
        self._cadir = cadir
        self._proxies = {}  # thing -> the running Proxy

    def notified(self, thing, payload):
        """A message on THING's tunnels/notify topic."""
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise TunnelRequestError("not a JSON object")
            if doc.get("clientMode") != "destination":
                log.info("tunnel notification for %s is not for a destination; ignored", thing)
                return
            self.open(thing, doc.get("region"), doc.get("services"),
                      doc.get("clientAccessToken"))
        except (ValueError, RecursionError) as e:  # bad JSON, a TunnelRequestError: no token
            log.error("tunnel notification for %s ignored: %s", thing, e)

    def open(self, thing, region, services, token):
        """Start THING's proxy for the mapped services; TunnelRequestError if impossible."""
        mapping = self._mappings.get(thing)
        if mapping is None:
            raise TunnelRequestError("%r has no --tunnelmappings" % thing)
        if not isinstance(token, str) or not token:
            raise TunnelRequestError("no access token")
        if not isinstance(region, str) or not region:
            raise TunnelRequestError("no region")
        if not isinstance(services, list) or not services or \
                not all(isinstance(s, str) and s for s in services):
            raise TunnelRequestError("services must be a non-empty list of names")
        wanted = [s for s in dict.fromkeys(services) if s in mapping]
        if not wanted:
            raise TunnelRequestError("none of the requested services (%s) is mapped for %s"
                                     % (", ".join(services), thing))
        digest = hashlib.sha256(token.encode()).digest()
        running = self._proxies.get(thing)
        if running and running.token_digest == digest:
            log.info("tunnel request for %s repeated; its proxy is already running", thing)
            return
        self.close(thing)
        argv = [self._program, "-d", ",".join("%s=%s" % (s, mapping[s]) for s in wanted)]
        if self._cadir:
            argv += ["-c", self._cadir]
        env = dict(os.environ, AWSIOT_TUNNEL_ACCESS_TOKEN=token, AWSIOT_TUNNEL_REGION=region)
        try:
            proc = children.launch(self._loop, argv, lambda proc: self._exited(thing, proc),
                                   env=env, stdin=subprocess.DEVNULL)
        except (OSError, ValueError) as e:
            raise TunnelRequestError("cannot start tunnel proxy %s: %s"
                                     % (self._program, getattr(e, "strerror", None) or e)) \
                from None
        self._proxies[thing] = Proxy(proc, digest)
        skipped = [s for s in services if s not in mapping]
        log.info("tunnel proxy for %s started (pid %d) in %s for %s%s", thing, proc.pid, region,
                 ", ".join(wanted), "; not mapped: " + ", ".join(skipped) if skipped else "")

    def close(self, thing):
        """Stop THING's proxy; False when none was running."""
        proxy = self._proxies.pop(thing, None)
        if proxy is None:
            return False
        log.info("stopping tunnel proxy for %s (pid %d)", thing, proxy.proc.pid)
        children.stop_soon(proxy.proc)
        return True

    def stop(self):
        """Daemon exit: stop every proxy."""
        for thing in list(self._proxies):
            self.close(thing)

    def _exited(self, thing, proc):
        proxy = self._proxies.get(thing)
        if proxy is not None and proxy.proc is proc:
            del self._proxies[thing]
            status = proc.returncode
            how = "was killed by signal %d" % -status if status < 0 else "exited with status %d" \
                % status
            log.warning("tunnel proxy for %s %s", thing, how)
        else:
            log.info("tunnel proxy for %s stopped", thing)

