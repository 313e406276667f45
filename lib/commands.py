"""The --commands action directory (docs/interface.md#commands).

A file's name is the command and its contents the arguments: `refetch`,
`reprovision`, `open-tunnel` ({"thing", "region", "services", "token"}) and
`close-tunnel` ({"thing"}). A name may carry a suffix after a dot
(`open-tunnel.42`), so that two requests written at once do not replace
each other in new/. An unknown command or bad arguments go to failed/ with
a log line. This module only dispatches: shadows, provisioning and tunnels
do the work, and provisioning code is imported only when asked for.
"""

import json
import logging

from .actiondir import ActionDir, ActionFailed, Consumer

log = logging.getLogger("chariotd")

ARGUMENTS_LIMIT = 64 * 1024


def start(daemon):
    commands = Commands(daemon)
    Consumer(daemon.watcher, ActionDir(daemon.options.commands), commands.handle,
             limit=ARGUMENTS_LIMIT)
    return commands


class Commands:
    def __init__(self, daemon):
        self._daemon = daemon
        self._rotation = None  # the reprovision flow, while it runs

    def handle(self, name, data):
        command = name.partition(".")[0]
        action = self._actions.get(command)
        if action is None:
            raise ActionFailed("unknown command %r" % command)
        log.info("command %s", name)
        action(self, data)

    def stop(self):
        if self._rotation:
            self._rotation.stop()

    def _refetch(self, _data):
        self._daemon.refetch()

    def _reprovision(self, _data):
        if not self._daemon.options.fleetprov:
            raise ActionFailed("reprovision needs --fleetprov")
        if self._rotation and self._rotation.running:
            log.info("reprovisioning is already under way")
            return
        from . import provisioning

        try:
            self._rotation = provisioning.rotate(self._daemon)
        except provisioning.ConfigError as e:
            raise ActionFailed(str(e)) from None

    def _open_tunnel(self, data):
        args = _arguments(data)
        try:
            self._tunnels().open(_thing(args), args.get("region"), args.get("services"),
                                 args.get("token"))
        except ValueError as e:  # tunnels.TunnelRequestError: says why, never the token
            raise ActionFailed(str(e)) from None

    def _close_tunnel(self, data):
        thing = _thing(_arguments(data))
        if not self._tunnels().close(thing):
            log.info("no tunnel proxy is running for %s", thing)

    def _tunnels(self):
        tunnels = self._daemon.parts.get("tunnels")
        if tunnels is None:
            raise ActionFailed("tunnels need --tunnelmappings")
        return tunnels

    _actions = {
        "refetch": _refetch,
        "reprovision": _reprovision,
        "open-tunnel": _open_tunnel,
        "close-tunnel": _close_tunnel,
    }


def _arguments(data):
    try:
        args = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ActionFailed("arguments are not valid JSON: %s" % e) from None
    if not isinstance(args, dict):
        raise ActionFailed("arguments are not a JSON object")
    return args


def _thing(args):
    thing = args.get("thing")
    if not isinstance(thing, str) or not thing:
        raise ActionFailed("no \"thing\" in the arguments")
    return thing
