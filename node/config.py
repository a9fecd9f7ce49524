"""Every setting artkeep has, declared once with its default and help.

Pure: values come in as a parsed TOML mapping and an environment mapping,
a Config comes out. Precedence: built-in default < config file < environment
(ARTKEEP_<SECTION>_<NAME>) < command-line flags (applied by the CLI).
config/artkeep.example.toml and docs/configuration.md list the same settings;
a test fails when they drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import InputError
from node.profiles import DEFAULT_PROFILE, get_profile


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    name: str
    default: str | bool | int
    help: str

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"ARTKEEP_{self.section}_{self.name}".upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("import", "profile", DEFAULT_PROFILE,
            "CID profile for new pins: unixfs-v1-2025, unixfs-v0-2015 (Kubo's default) or kubo-cidv1."),
    Setting("import", "include_hidden", False,
            "Include names starting with '.' when a folder is added as one directory (--dir)."),
    Setting("log", "level", "warning", "Log level: debug, info, warning or error."),
    Setting("log", "format", "text",
            "Log format: text (one line per event) or json (one JSON object per line, for log collectors)."),
    Setting("serve", "listen", "127.0.0.1:8737",
            "HOST:PORT the daemon listens on (also ARTKEEP_LISTEN). Keep 127.0.0.1 unless a reverse "
            "proxy or firewall guards it."),
    Setting("serve", "private_reads", False,
            "Require an API token for read endpoints too (gateway, pin lists); writes always need one."),
    Setting("serve", "max_request_bytes", 1024 * 1024,
            "Largest request body accepted by JSON endpoints, in bytes."),
    Setting("serve", "max_upload_bytes", 8 * 1024 ** 3,
            "Largest CAR or block upload accepted, in bytes."),
    Setting("serve", "upload_timeout", 60,
            "Seconds an upload may stall (no bytes arriving) before it is dropped and nothing is kept."),
    Setting("serve", "max_concurrent_requests", 64,
            "Requests handled at once; more get 429 Too Many Requests with Retry-After."),
    Setting("serve", "shutdown_timeout", 30,
            "Seconds SIGTERM waits for in-flight requests (uploads, pins) to finish."),
    Setting("fetch", "allow_networks", "public",
            "Networks the node may fetch from (pin origins, remotes, peers): comma-separated CIDRs, "
            "and 'public' for every public unicast address. Private and loopback ranges are refused "
            "unless listed, so a request cannot turn the node against the home network."),
    Setting("fetch", "timeout", 60, "Seconds a fetch from an origin, remote or peer may stall."),
    Setting("replication", "copies", 2,
            "Copies of every pin to keep on places beyond the local one (`artkeep place add`)."),
    Setting("push", "concurrency", 4, "Pushes running at once, across all places."),
    Setting("push", "per_place", 2, "Pushes running at once to any one place."),
    Setting("push", "bandwidth", 0, "Upload limit for pushes in bytes per second, all places together "
                                    "(0: no limit)."),
    Setting("push", "retry_base", 30, "Seconds before the first retry of a failed push; each further "
                                      "failure doubles it (with jitter)."),
    Setting("push", "retry_max", 21600, "Longest wait between retries of a failed push, in seconds."),
    Setting("push", "timeout", 300, "Seconds one push request (an upload, a status call) may take."),
    Setting("push", "verify", True, "Fetch every block back from a place that claims a copy and re-hash "
                                    "it before counting the copy as verified."),
    Setting("push", "plan_interval", 60, "Seconds between the daemon's looks for pins that need more "
                                         "copies (new pins, places added, copies lost)."),
    Setting("push", "origins", "", "Comma-separated addresses (multiaddrs or URLs) where pinning services "
                                   "can fetch from this node's gateway; sent as PSA origins."),
    Setting("audit", "schedule", True, "Run audits on a schedule while the daemon runs (`artkeep audit` "
                                       "runs them on demand either way)."),
    Setting("audit", "samples", 8, "Random blocks of a work fetched and re-hashed per sampled check of "
                                   "one copy."),
    Setting("audit", "presence_per_day", 6, "Times a day each place is asked whether it still pins each "
                                            "copy (its word only, never counted as proof)."),
    Setting("audit", "sampled_per_day", 4, "Sampled checks of each copy per day, spread evenly over the "
                                           "day."),
    Setting("audit", "full_cycle_days", 30, "Days in which every copy is fetched whole (CAR) and re-hashed "
                                            "once, a share of them each night."),
    Setting("audit", "full_budget", 3600, "Seconds the nightly full checks may take; what is left waits for "
                                          "the next night."),
    Setting("audit", "full_at", 3, "Hour of the night (local time, 0-23) when the full checks start."),
    Setting("audit", "local_cycle_days", 7, "Days in which every pin in the local store is re-hashed once "
                                            "(a rolling fsck; damaged blocks are healed from a verified "
                                            "copy)."),
    Setting("audit", "verified_window", 7, "Days a passed sampled or full check keeps a copy counted as "
                                           "verified; older, it is only claimed again and does not count."),
    Setting("audit", "concurrency_per_place", 2, "Checks running at once against any one place."),
    Setting("audit", "check_timeout", 60, "Seconds one sampled check may take before the place counts as "
                                          "unreachable."),
    Setting("audit", "failing_alert_after", 3, "Audits in a row that cannot reach a copy before it is marked "
                                               "failing (pushed again) and its place is reported."),
    Setting("audit", "webhook", "", "URL that gets a JSON POST when a place starts failing (empty: no "
                                    "webhook; the log line and the artkeep_places_failing metric are "
                                    "always there)."),
    Setting("audit", "keep_days", 7, "Days passed checks are kept one row each in the findings table; "
                                     "older ones are rolled up per copy, level and month (counts, blocks, "
                                     "bytes, first and last time). Problems are kept one row each for good."),
    Setting("audit", "tick", 300, "Seconds between the daemon's looks for checks that are due."),
    Setting("gallery", "public", True,
            "Let anyone who can reach the daemon browse the gallery (read-only pages, thumbnails, images) "
            "without logging in; off, every gallery page needs a login. serve.private_reads on makes the "
            "gallery private too."),
)
# Short environment names users expect, besides ARTKEEP_<SECTION>_<NAME>.
ENV_ALIASES = {"ARTKEEP_LISTEN": "serve.listen"}
_BY_KEY = {setting.key: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class Config:
    values: Mapping[str, str | bool | int]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def profile(self) -> str:
        return str(self.values["import.profile"])

    @property
    def include_hidden(self) -> bool:
        return bool(self.values["import.include_hidden"])


def build(file_values: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    values: dict[str, str | bool | int] = {s.key: s.default for s in SETTINGS}
    for section, table in file_values.items():
        if not isinstance(table, dict):
            raise InputError(f"config: [{section}] must be a table")
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in _BY_KEY:
                raise InputError(f"config: unknown setting {key}")
            values[key] = _coerce(_BY_KEY[key], value)
    for alias, key in ENV_ALIASES.items():
        if alias in environ:
            values[key] = _coerce(_BY_KEY[key], environ[alias])
    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.key] = _coerce(setting, environ[setting.env])
    get_profile(str(values["import.profile"]))
    for key, allowed in _CHOICES.items():
        if str(values[key]).lower() not in allowed:
            raise InputError(f"config: {key} must be one of {', '.join(allowed)}, not {values[key]!r}")
    parse_listen(str(values["serve.listen"]))
    return Config(values)


_CHOICES = {"log.level": ("debug", "info", "warning", "error"), "log.format": ("text", "json")}


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') → (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"listen address must be HOST:PORT, not {value!r}")
    return host, int(port)


def _coerce(setting: Setting, value: Any) -> str | bool | int:
    kind = type(setting.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif isinstance(value, str):
        return value
    raise InputError(f"config: {setting.key} must be a {kind.__name__}, not {value!r}")


def default_home(environ: Mapping[str, str]) -> Path:
    """$ARTKEEP_HOME, else $XDG_DATA_HOME/artkeep, else ~/.local/share/artkeep."""
    if environ.get("ARTKEEP_HOME"):
        return Path(environ["ARTKEEP_HOME"]).expanduser()
    xdg = environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path(os.path.expanduser("~")) / ".local" / "share"
    return base / "artkeep"
