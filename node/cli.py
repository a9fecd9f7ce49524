"""The `artkeep` command line: the only module that prints.

Maps every NodeError to its exit code once, in main(). Human output goes to
stdout, progress and errors to stderr; with --json each result is one JSON
object per line on stdout, so scripts never parse prose.

Exit codes: 0 all done; 1 something failed (the rest went on); 2 bad usage
or invalid input; 3 damage found (fsck) or data that does not match its CID;
4 not found; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import __version__, config, importer, logs, sources, unixfs
from node import cid as cids
from node.audit import LEVELS, AuditPolicy, detection_text
from node.errors import InputError, NodeError, PathError, PinNotFound
from node.profiles import PROFILES, Profile, get_profile
from node.remotes.base import HOLDS, KINDS, PlaceSpec
from node.unixfs import DagLink

if TYPE_CHECKING:  # the node (and the image libraries under it) loads only for commands that open one
    from node.node import Node

JSON_HELP = "one JSON object per line on stdout"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGE, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class Output:
    """Where results go: JSON lines or human text on stdout, notes on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.show_progress = not as_json and sys.stderr.isatty()

    def result(self, record: dict[str, Any], text: str) -> None:
        if self.as_json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif "error" in record:
            self.note(text)
        else:
            print(text, flush=True)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, total: int, what: str) -> Iterator[Callable[[int], None]]:
        if not self.show_progress or total <= 0:
            yield lambda _: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = [TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn()]
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(what, total=total)
            yield lambda advance: bar.advance(task, advance)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _open_node(args: argparse.Namespace) -> Node:
    from node.node import Node

    return Node(args.home, copies=int(args.config["replication.copies"]),
                audit=AuditPolicy.from_config(args.config))


# --- pin / cid --------------------------------------------------------------

def _add_paths(args: argparse.Namespace, out: Output, store: bool) -> int:
    profile = get_profile(args.profile or args.config.profile)
    include_hidden = args.hidden or args.config.include_hidden
    node = _open_node(args) if store else None
    failures = 0
    files = done_bytes = 0

    def fail(path: Path, message: str) -> None:
        nonlocal failures
        failures += 1
        out.result({"path": str(path), "error": message}, f"error: {message}")

    try:
        if args.dir:
            for path in args.paths:
                if not path.is_dir():
                    fail(path, f"{path}: not a folder (--dir takes folders)")
                    continue
                report = importer.TreeReport()
                total = _tree_bytes(path)
                with out.progress(total, f"{'pin' if store else 'cid'} {path.name}") as advance:
                    if node is not None:
                        node.add_tree(path, profile, include_hidden=include_hidden, progress=advance,
                                      report=report)
                    else:
                        importer.import_tree(path, profile, include_hidden=include_hidden,
                                             progress=advance, report=report)
                for entry in report.entries:
                    if entry.error is not None:
                        fail(entry.path, entry.error)
                        continue
                    assert entry.link is not None
                    size = entry.size
                    if entry.kind != "directory":
                        files += 1
                        done_bytes += size
                    out.result({"path": str(entry.path), "cid": str(entry.link.cid), "size": size,
                                "kind": entry.kind},
                               f"{entry.link.cid}  {_human_size(size):>10}  {entry.path}")
        else:
            paths = list(importer.iter_files(args.paths, fail))
            total = sum(_safe_size(path) for path in paths)
            with out.progress(total, "pin" if store else "cid") as advance:
                if node is not None:
                    results = node.add_files(paths, profile, wrap=args.wrap, progress=advance)
                else:
                    results = _hash_files(paths, profile, args.wrap, advance)
                for path, link in results:
                    if isinstance(link, NodeError):
                        fail(path, link.message)
                        continue
                    files += 1
                    size = link.filesize if not args.wrap else _safe_size(path)
                    done_bytes += size
                    out.result({"path": str(path), "cid": str(link.cid), "size": size},
                               f"{link.cid}  {_human_size(size):>10}  {path}")
    finally:
        if node is not None:
            node.close()
    verb = "pinned" if store else "hashed"
    summary = f"{verb} {files} file{'s' if files != 1 else ''} ({_human_size(done_bytes)})"
    if failures:
        summary += f", {failures} failed"
    if not out.as_json:
        out.note(summary + f" with profile {profile.name}")
    return EXIT_FAILED if failures else EXIT_OK


def _hash_files(paths: list[Path], profile: Profile, wrap: bool,
                progress: Callable[[int], None]) -> Iterator[tuple[Path, DagLink | NodeError]]:
    for path in paths:
        try:
            link = importer.import_file(path, profile, progress=progress)
            yield path, unixfs.wrap(path.name, link, profile) if wrap else link
        except NodeError as exc:
            yield path, exc


def _safe_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            total += _safe_size(Path(folder) / name)
    return total


def cmd_pin(args: argparse.Namespace, out: Output) -> int:
    if args.dir or args.wrap or args.plain:
        return _add_paths(args, out, store=True)
    profile = get_profile(args.profile or args.config.profile)
    with _open_node(args) as node:
        return _rescue(node, out, list(sources.walk(args.paths, archives=False)), profile, None, "pin",
                       outcomes=False)


def _rescue(node: Node, out: Output, items: list[sources.Item], profile: Profile, source: str | None,
            what: str, *, outcomes: bool = True) -> int:
    """Run a rescue and print one line per file, then a summary; exit 1 if any file failed.

    outcomes=False keeps `pin --json` lines to {"path", "cid", "size"} (+ "work", "sidecar_of").
    """
    counts = {"new": 0, "duplicate": 0, "sidecar": 0, "failed": 0}
    done_bytes = 0
    total = sum(item.size + sum(side.size for side in item.sidecars.values())
                for item in items if isinstance(item, sources.SourceFile))
    with out.progress(total, what) as advance:
        for result in node.rescue(items, profile, source=source, progress=advance):
            counts[result.outcome] += 1
            record: dict[str, Any] = {"path": result.display}
            if result.error is not None:
                record |= {"outcome": "failed"} if outcomes else {}
                record["error"] = result.error
                out.result(record, f"error: {result.error}")
                continue
            done_bytes += result.size
            record |= {"cid": str(result.cid), "size": result.size}
            if outcomes:
                record["outcome"] = result.outcome
            if result.work is not None:
                record["work"] = str(result.work)
            if result.duplicate_of is not None and outcomes:
                record["duplicate_of"] = str(result.duplicate_of)
            if result.sidecar_of is not None:
                record["sidecar_of"] = result.sidecar_of
            note = {"new": "", "duplicate": f"  (duplicate of {result.duplicate_of})",
                    "sidecar": f"  (sidecar of {result.sidecar_of})"}[result.outcome]
            work = f"  work {result.work}" if result.work is not None and result.outcome != "sidecar" else ""
            out.result(record, f"{result.cid}  {_human_size(result.size):>10}  {result.display}{work}{note}")
    if not out.as_json:
        parts = [f"{counts['new']} new", f"{counts['duplicate']} duplicate"]
        if counts["sidecar"]:
            parts.append(f"{counts['sidecar']} sidecar")
        if counts["failed"]:
            parts.append(f"{counts['failed']} failed")
        out.note(f"{what}: {', '.join(parts)} ({_human_size(done_bytes)}, profile {profile.name})")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def cmd_cid(args: argparse.Namespace, out: Output) -> int:
    return _add_paths(args, out, store=False)


# --- reading ----------------------------------------------------------------

def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        for pin in node.pins():
            out.result({"cid": pin.cid, "name": pin.name, "size": pin.size, "dag_size": pin.dag_size,
                        "kind": pin.kind, "profile": pin.profile, "created": pin.created},
                       f"{pin.cid}  {_human_size(pin.size):>10}  {pin.kind:<9}  {pin.name}")
    return EXIT_OK


def cmd_cat(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        sink = sys.stdout.buffer
        for piece in node.cat(args.path):
            sink.write(piece)
        sink.flush()
    return EXIT_OK


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    if args.site is not None:
        return _export_site(args, out)
    if args.cid is None or args.output is None:
        raise InputError("export needs a CID and -o FILE.car (or --site DIR for the whole gallery)")
    root = cids.parse(args.cid)
    with _open_node(args) as node:
        if args.output == "-":
            count = node.export_car(root, sys.stdout.buffer.write)
            sys.stdout.buffer.flush()
            return EXIT_OK
        target = Path(args.output)
        partial = target.with_name(target.name + ".part")
        try:
            with open(partial, "wb") as handle:
                count = node.export_car(root, handle.write)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        out.result({"cid": str(root), "car": str(target), "blocks": count,
                    "bytes": target.stat().st_size},
                   f"exported {root} to {target} ({count} blocks, {_human_size(target.stat().st_size)})")
    return EXIT_OK


def _export_site(args: argparse.Namespace, out: Output) -> int:
    from node.site import export_site

    with _open_node(args) as node:
        done = export_site(node, args.site)
    for work, why in done.failed:
        out.result({"work": work, "error": why}, f"error: {work}: {why}")
    out.result({"site": str(done.folder), "works": done.works, "pages": done.pages,
                "failed": len(done.failed)},
               f"exported {done.works} works in {done.pages} pages to {done.folder} "
               f"(open {done.folder / 'index.html'})")
    return EXIT_FAILED if done.failed else EXIT_OK


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    status = EXIT_OK
    cars = [path for path in args.paths if str(path) == "-" or path.suffix.lower() == ".car"]
    rest = [path for path in args.paths if path not in cars]
    with _open_node(args) as node:
        if rest:
            profile = get_profile(args.profile or args.config.profile)
            status = _rescue(node, out, list(sources.walk(rest)), profile, args.source, "import")
        for path in cars:
            try:
                handle = sys.stdin.buffer if str(path) == "-" else open(path, "rb")  # noqa: SIM115
            except OSError as exc:
                out.result({"path": str(path), "error": f"{path}: {exc.strerror}"},
                           f"error: {path}: {exc.strerror}")
                status = EXIT_FAILED
                continue
            try:
                with handle:
                    result = node.import_car(handle, path.name)
            except NodeError as exc:
                out.result({"path": str(path), "error": f"{path}: {exc.message}; nothing was stored"},
                           f"error: {path}: {exc.message}; nothing was stored")
                status = max(status, exc.exit_code)
                continue
            for root in result.roots:
                record: dict[str, Any] = {"path": str(path), "cid": str(root), "blocks": result.blocks,
                                          "new_blocks": result.new_blocks}
                if root in result.incomplete:
                    absent = result.incomplete[root]
                    record["error"] = f"DAG incomplete: {absent} block(s) missing; not pinned"
                    status = max(status, EXIT_FAILED)
                    out.result(record, f"error: {root} from {path}: {record['error']}")
                else:
                    out.result(record, f"{root}  pinned from {path} ({result.blocks} blocks, "
                                       f"{result.new_blocks} new)")
            if not result.roots:
                out.result({"path": str(path), "cid": None, "blocks": result.blocks,
                            "new_blocks": result.new_blocks},
                           f"{path}: no roots; {result.blocks} blocks stored unpinned")
    return status


# --- removing and checking --------------------------------------------------

def cmd_unpin(args: argparse.Namespace, out: Output) -> int:
    status = EXIT_OK
    with _open_node(args) as node:
        for text in args.cids:
            try:
                pin = node.unpin(cids.parse(text))
            except NodeError as exc:
                out.result({"cid": text, "error": exc.message}, f"error: {exc.message}")
                status = max(status, exc.exit_code)
                continue
            out.result({"cid": pin.cid, "unpinned": True}, f"unpinned {pin.cid} ({pin.name})")
    if not out.as_json and status == EXIT_OK:
        out.note("blocks stay until `artkeep gc` removes what no pin reaches")
    return status


def cmd_gc(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        candidates = node.gc_candidates()
        sizes = {cid: node.store.size(cid) for cid in candidates}
        total = sum(sizes.values())
        if not candidates and not args.dry_run:
            node.gc(expected=[])  # still clears what interrupted writes left behind
        if args.dry_run or not candidates:
            for cid in candidates:
                out.result({"cid": str(cid), "size": sizes[cid], "removed": False},
                           f"would remove {cid}")
            if not out.as_json:
                out.note(f"{len(candidates)} unreachable block(s), {_human_size(total)}"
                         + ("; run `artkeep gc --yes` to remove them" if candidates else ""))
            return EXIT_OK
        if not args.yes:
            for cid in candidates:
                out.note(f"will remove {cid}")
            if not sys.stdin.isatty():
                raise InputError(f"{len(candidates)} block(s) would be removed; "
                                 "pass --yes to confirm (or --dry-run to list them)")
            answer = input(f"Remove {len(candidates)} block(s), {_human_size(total)}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                out.note("nothing removed")
                return EXIT_OK
        removed = node.gc(expected=candidates)
        for cid in removed:
            out.result({"cid": str(cid), "removed": True}, f"removed {cid}")
        if not out.as_json:
            out.note(f"removed {len(removed)} block(s)")
    return EXIT_OK


def cmd_fsck(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        blocks = node.store.usage().blocks
        with out.progress(blocks, "fsck") as advance:
            findings = node.fsck(progress=advance)
        damage = [f for f in findings if f.kind != "leftover"]
        for finding in findings:
            out.result({"kind": finding.kind, "cid": finding.cid, "message": finding.message},
                       f"{finding.kind}: {finding.message}")
        if not out.as_json:
            pins = len(node.pins())
            verdict = f"{len(damage)} problem(s) found" if damage else "no damage found"
            out.note(f"checked {blocks} block(s) and {pins} pin(s): {verdict}")
    return EXIT_DAMAGE if damage else EXIT_OK


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        usage = node.store.usage()
        pins = node.pins()
        health = node.replication_health()
        record = {"home": str(args.home), "version": __version__, "pins": len(pins),
                  "blocks": usage.blocks, "bytes": usage.bytes, "profile": args.config.profile,
                  "places": health.places, "copies_wanted": node.copies,
                  "below_target": health.works_below_target, "queue_depth": health.queue_depth,
                  "failing_places": list(health.failing_places)}
        checks = node.place_checks()
        policy = node.audit_policy
        record["place_checks"] = [{"name": name, "copies": copies, "verified": verified,
                                   "last_check": _iso(last)} for name, copies, verified, last in checks]
        record["detection"] = detection_text(policy.samples, policy.sampled_per_day)
        out.result(record, "\n".join([
            f"artkeep {__version__}",
            f"home     {args.home}",
            f"pins     {len(pins)}",
            f"blocks   {usage.blocks} ({_human_size(usage.bytes)})",
            f"profile  {args.config.profile}",
            f"places   {health.places}; {health.works_below_target} pins below {node.copies} verified "
            f"copies; {health.queue_depth} queued",
            *([f"failing  {', '.join(health.failing_places)}"] if health.failing_places else []),
            *(f"  {name:<16} {verified} of {copies} copies verified, last check "
              f"{_when(last) if last else 'never'}" for name, copies, verified, last in checks),
            *([f"audit    {record['detection']}"] if checks else []),
        ]))
    return EXIT_OK


# --- works -------------------------------------------------------------------

def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    from node.metadata import extract
    from node.rescue import MAX_IMAGE_BYTES

    status = EXIT_OK
    for path in args.files:
        try:
            data = _read_file(path, MAX_IMAGE_BYTES)
            sidecars = {suffix: _read_file(path.with_suffix(suffix), sources.MAX_SIDECAR_BYTES)
                        for suffix in sources.SIDECAR_SUFFIXES
                        if path.with_suffix(suffix).is_file() and path.with_suffix(suffix) != path}
            extraction = extract(data, sidecars=sidecars)
        except NodeError as exc:
            out.result({"path": str(path), "error": exc.message}, f"error: {path}: {exc.message}")
            status = max(status, exc.exit_code)
            continue
        result = extraction.to_json()
        if len(args.files) > 1 or not out.as_json:
            result = {"path": str(path), **result}
        out.result(result, _params_text(str(path), result["generator"], result["params"]))
    return status


def _read_file(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise PathError(f"{path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path}: larger than {limit} bytes")
    return data


def _params_text(title: str, generator: Any, params: Any) -> str:
    lines = [title, f"  generator  {generator.get('family')} ({generator.get('tool') or 'unknown tool'})"]
    for key in ("prompt", "negative_prompt", "seed", "steps", "sampler", "scheduler", "cfg_scale", "width",
                "height", "model", "model_hash"):
        if params.get(key) not in (None, ""):
            lines.append(f"  {key:<16} {params[key]}")
    for lora in params.get("loras") or []:
        lines.append(f"  lora             {lora.get('name')} ({lora.get('weight')})")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    from node import restore, work

    with _open_node(args) as node:
        cid = cids.parse(args.work)
        record = node.work(cid)
        params = restore.plain_params(record.get("params") or {})  # type: ignore[arg-type]
        image = str(work.image_cid(record))
        result = {"work": str(cid), "image": image, "generator": record.get("generator"),
                  "params": params, "provenance": record.get("provenance")}
        text = _params_text(f"work {cid}\n  image      {image}", record.get("generator") or {}, params)
        out.result(json.loads(json.dumps(result, default=str)), text)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from node import signing

    status = EXIT_OK
    with _open_node(args) as node:
        for text in args.works:
            try:
                check = node.verify_work(cids.parse(text))
            except NodeError as exc:
                out.result({"work": text, "ok": False, "error": exc.message}, f"error: {text}: {exc.message}")
                status = max(status, exc.exit_code)
                continue
            signer = signing.peer_id(check.signer)
            out.result({"work": str(check.cid), "ok": True, "signer": signer, "ours": check.ours,
                        "blocks": check.blocks},
                       f"{check.cid}  ok: signature by {signer}{' (this node)' if check.ours else ''}, "
                       f"{check.blocks} blocks verified")
    return status


def cmd_restore(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        written = node.restore(cids.parse(args.work), args.output, overwrite=args.force)
    for path in written:
        out.result({"path": str(path), "size": path.stat().st_size}, str(path))
    return EXIT_OK


# --- daemon and tokens -----------------------------------------------------

def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio

    from node.web.server import serve

    settings = dict(args.config.values)
    if args.listen:
        config.parse_listen(args.listen)
        settings["serve.listen"] = args.listen

    def announce(url: str) -> None:
        out.result({"url": url, "home": str(args.home)}, f"artkeep serving {url} (home {args.home})")

    with _open_node(args) as node:
        asyncio.run(serve(node, config.Config(settings), announce))
    return EXIT_OK


def cmd_id(args: argparse.Namespace, out: Output) -> int:
    import base64

    from node import signing

    with _open_node(args) as node:
        public = node.public_key()
        peer = signing.peer_id(public)
        out.result({"id": peer, "public_key": base64.b64encode(public).decode()},
                   f"{peer}\n(give this to other nodes that add this one as a peer place: "
                   f"--option public_key={peer})" if sys.stdout.isatty() else peer)
    return EXIT_OK


def cmd_token(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        if args.action == "create":
            token, secret = node.create_token(args.name)
            out.result({"id": token.id, "name": token.name, "token": secret},
                       secret if not sys.stdout.isatty() else
                       f"{secret}\n(token {token.id} \"{token.name}\": shown only now; send it as "
                       "'Authorization: Bearer TOKEN')")
        elif args.action == "list":
            for token in node.tokens():
                out.result({"id": token.id, "name": token.name, "created": token.created},
                           f"{token.id}  {_when(token.created)}  {token.name}")
        else:
            for token_id in args.ids:
                node.revoke_token(token_id)
                out.result({"id": token_id, "revoked": True}, f"revoked {token_id}")
    return EXIT_OK


# --- places and push ---------------------------------------------------------

def cmd_place(args: argparse.Namespace, out: Output) -> int:
    with _open_node(args) as node:
        if args.action == "add":
            spec = node.add_place(_place_spec(args))
            queued = node.plan_copies()
            out.result({**spec.public(), "queued": queued},
                       f"added {spec.kind} place {spec.name} ({spec.url}); {queued} copies queued "
                       "(`artkeep push --wait` or the daemon sends them)")
        elif args.action == "ls":
            usage = node.index.place_usage()
            for spec in node.places():
                used = usage.get(spec.name, 0)
                quota = f" of {_human_size(spec.quota_bytes)}" if spec.quota_bytes else ""
                out.result({**spec.public(), "used_bytes": used},
                           f"{spec.name:<16} {spec.kind:<8} {spec.url}  holds {spec.holds}, "
                           f"{_human_size(used)}{quota} placed")
        else:
            for name in args.names:
                node.remove_place(name)
                out.result({"name": name, "removed": True},
                           f"removed {name} (its copies are forgotten here; the place keeps what it has)")
    return EXIT_OK


def _place_spec(args: argparse.Namespace) -> PlaceSpec:
    from node.remotes import validate_spec

    options: dict[str, str] = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option must be KEY=VALUE, not {item!r}")
        options[key] = value
    token = args.token
    if args.token_file is not None:
        token = _read_secret(args.token_file)
    if token is None:
        token = os.environ.get("ARTKEEP_PLACE_TOKEN") or None
    return validate_spec(args.kind, args.url, options, name=args.name, token=token, holds=args.holds,
                         quota_bytes=_parse_size(args.quota) if args.quota else None)


def _read_secret(path: Path) -> str:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PathError(f"cannot read {path}: {exc.strerror}") from None
    return text.strip()


def _parse_size(text: str) -> int:
    """'500MB', '10 GiB', '123' → bytes (SI and binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise InputError(f"not a size: {text!r} (try 500MB or 10GiB)")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGTP".index(prefix.upper() or " "))


def cmd_push(args: argparse.Namespace, out: Output) -> int:
    import asyncio
    import time

    from node.pusher import Pusher, PushSettings, Step

    with _open_node(args) as node:
        roots = [str(_parse_cid(text)) for text in args.works] or None
        if roots:
            for root in roots:
                if node.index.get_pin(root) is None:
                    raise PinNotFound(f"{root} is not pinned here")
        if not node.places():
            raise InputError("no places to push to: add one with `artkeep place add NAME KIND URL`")
        retried = node.retry_copies(roots or [pin.cid for pin in node.pins()]) if args.retry else 0
        queued = node.plan_copies(roots)
        depth = node.index.queue_depth()
        out.note(f"{queued} copies queued, {retried} retried; {depth} in the queue")
        settings = PushSettings.from_config(args.config)
        until = time.time() + args.timeout if args.timeout else None
        failed: list[Step] = []

        async def run(advance: Callable[[int], None]) -> None:
            def on_step(step: Step) -> None:
                if step.state in ("verified", "claimed", "failing", "corrupt"):
                    advance(1)
                if step.error:
                    failed.append(step)
                if out.as_json:
                    out.result({"cid": step.cid, "place": step.place, "state": step.state,
                                "error": step.error}, "")
                elif step.state != "pushed":
                    reason = f" ({step.error})" if step.error else ""
                    out.note(f"{step.place}: {step.cid} {step.state}{reason}")

            async with Pusher(node, settings) as pusher:
                await pusher.drain(until=until, on_step=on_step, wait_retries=args.wait)

        with out.progress(depth, "pushing") as advance:
            asyncio.run(run(advance))
        states = [view.state for root in (roots or [pin.cid for pin in node.pins()])
                  for view in node.whereis(_parse_cid(root)).places]
        left = node.index.queue_depth()
        stuck = node.index.queue_stuck()
        summary = {state: states.count(state) for state in sorted(set(states))}
        out.result({"copies": summary, "queue_depth": left, "permanent_failures": stuck},
                   ", ".join(f"{count} {state}" for state, count in summary.items()) or "nothing to push"
                   + (f"; {left} still queued (the daemon goes on, or rerun with --wait)" if left else ""))
    return EXIT_FAILED if stuck or "corrupt" in summary or (args.wait and left) else EXIT_OK


def cmd_whereis(args: argparse.Namespace, out: Output) -> int:
    import time

    with _open_node(args) as node:
        for text in args.cids:
            cid = _parse_cid(text)
            if node.get_pin(cid) is None:
                raise PinNotFound(f"{cid} is not pinned here")
            where = node.whereis(cid)
            lines = [f"{where.cid}: {where.verified_copies} verified of {where.target} wanted"]
            for view in where.places:
                checked = _when(view.last_check) if view.last_check else "never"
                proof = (f", {sum(view.passed.values())} checks passed since {_when(view.passed_since)}"
                         if view.passed_since else "")
                lines.append(f"  {view.place:<16} {view.state:<9} last check {checked}{proof}"
                             + (f"  ({view.error})" if view.error and view.state in ("failing", "corrupt")
                                else ""))
            if not where.places:
                lines.append("  no copies yet: `artkeep place add`, then `artkeep push`")
            elif where.detection:
                lines.append(f"  audit: {where.detection}")
            out.result({"cid": where.cid, "verified_copies": where.verified_copies, "target": where.target,
                        "places": [{"name": view.place, "kind": view.kind, "state": view.state,
                                    "last_check": _iso(view.last_check), "verified": _iso(view.verified),
                                    "error": view.error, "passed_checks": dict(view.passed),
                                    "passed_since": _iso(view.passed_since)} for view in where.places],
                        "detection": where.detection, "checked_at": _iso(time.time())}, "\n".join(lines))
    return EXIT_OK


def _iso(unix_time: float | None) -> str | None:
    import datetime

    if unix_time is None:
        return None
    return datetime.datetime.fromtimestamp(unix_time, datetime.UTC).isoformat(timespec="seconds")


def _parse_cid(text: str) -> cids.Cid:
    return cids.parse(text.strip().removeprefix("/ipfs/").split("/")[0])


def _when(unix_time: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_time))


# --- audit -------------------------------------------------------------------

def cmd_audit(args: argparse.Namespace, out: Output) -> int:
    import asyncio
    from collections import Counter

    from node.auditor import Auditor, RoundReport
    from node.index import FindingRow

    with _open_node(args) as node:
        roots = [str(_parse_cid(text)) for text in args.cids] or None
        for root in roots or []:
            if node.index.get_pin(root) is None:
                raise PinNotFound(f"{root} is not pinned here")
        levels = [args.level] if args.level else ["sampled"] if args.now else list(LEVELS)
        results: Counter[str] = Counter()

        def on_finding(finding: FindingRow) -> None:
            results[finding.result] += 1
            if out.as_json or finding.result != "ok":
                where = finding.place or "local store"
                bad = f" block {finding.block}" if finding.block else ""
                out.result({"cid": finding.cid, "place": finding.place, "level": finding.level,
                            "result": finding.result, "block": finding.block, "blocks": finding.blocks,
                            "bytes": finding.bytes, "seconds": finding.seconds, "detail": finding.detail,
                            "at": _iso(finding.at)},
                           f"{finding.result:<11} {finding.level:<8} {where}: {finding.cid}{bad}"
                           + (f" ({finding.detail})" if finding.detail else ""))

        async def run() -> list[RoundReport]:
            async with Auditor(node, node.audit_policy) as auditor:
                return [await auditor.run(level, roots=roots, force=args.now, on_finding=on_finding,
                                          budget=None if args.now or level != "full"
                                          else node.audit_policy.full_budget)
                        for level in levels]

        reports = asyncio.run(run())
        repairs = sum(report.repairs for report in reports)
        skipped = sorted({place for report in reports for place in report.skipped_places})
        if not out.as_json:
            summary = ", ".join(f"{count} {result}" for result, count in sorted(results.items()))
            out.note(f"audit ({', '.join(levels)}): {summary or 'nothing was due'}"
                     + (f"; skipped unreachable {', '.join(skipped)}" if skipped else "")
                     + (f"; {repairs} copies queued on other places (`artkeep push` or the daemon sends "
                        "them)" if repairs else ""))
    if results["corrupt"]:
        return EXIT_DAMAGE
    return EXIT_FAILED if results["missing"] or results["unreachable"] else EXIT_OK


# --- parser -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artkeep",
        description="Preserve AI-generated art on IPFS: content-address, pin, export and check works.",
        epilog="Exit codes: 0 ok, 1 something failed, 2 bad usage or input, 3 damage found, "
               "4 not found, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"artkeep {__version__}")
    parser.add_argument("--home", type=Path, help="data folder (default: $ARTKEEP_HOME, else "
                        "$XDG_DATA_HOME/artkeep, else ~/.local/share/artkeep)")
    parser.add_argument("--config", type=Path, help="config file (default: HOME/config.toml if present)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace, Output], int], help_text: str,
                json_flag: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
        return sub

    profiles_help = "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values())
    for name, handler, text in (
        ("pin", cmd_pin, "Store files and folders in the local store and pin them; print each CID."),
        ("cid", cmd_cid, "Compute the CIDs of files and folders without storing anything."),
    ):
        sub = command(name, handler, text)
        sub.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                         help="files or folders (folders are walked recursively, each file on its own)")
        sub.add_argument("--profile", choices=sorted(PROFILES), help=f"CID profile ({profiles_help})")
        sub.add_argument("--dir", action="store_true",
                         help="treat each folder as one UnixFS directory, exactly as `ipfs add -r`")
        sub.add_argument("--wrap", action="store_true",
                         help="wrap each file in a directory under its name (Kubo's `add -w`)")
        sub.add_argument("--hidden", action="store_true",
                         help="with --dir, include names starting with '.' (left out by default, like Kubo)")
        if name == "pin":
            sub.add_argument("--plain", action="store_true",
                             help="store images as plain files too, without work records")

    command("ls", cmd_ls, "List pins: CID, size, kind and name.")
    sub = command("cat", cmd_cat, "Write a pinned file's bytes to stdout, every block verified.",
                  json_flag=False)
    sub.add_argument("path", metavar="CID[/PATH]", help="a file CID, or a directory CID and a path in it")
    sub = command("export", cmd_export, "Export a DAG as a CARv1 file (depth-first, no duplicates), or with "
                  "--site the whole gallery as static HTML that opens from disk or any IPFS gateway.")
    sub.add_argument("cid", nargs="?", metavar="CID")
    sub.add_argument("-o", "--output", metavar="FILE.car", help="output file, or - for stdout")
    sub.add_argument("--site", type=Path, metavar="DIR",
                     help="write a static gallery of every work (pages, thumbnails, images, params JSON, "
                          "a CAR per work) into DIR")
    sub = command("import", cmd_import,
                  "Rescue whole archives: folders and zip files (images become signed works with their "
                  "metadata; a rerun skips what is done), and CAR files (every block verified; a CAR "
                  "with a bad block is refused whole; complete roots are pinned).")
    sub.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                     help="folders, .zip archives, or .car files (- reads a CAR from stdin)")
    sub.add_argument("--source", metavar="NAME",
                     help="where the files came from (a platform, say), kept in each work's provenance; "
                          "default: the folder or archive path")
    sub.add_argument("--profile", choices=sorted(PROFILES), help="CID profile for new files")
    sub = command("unpin", cmd_unpin, "Remove pins (their blocks stay until gc).")
    sub.add_argument("cids", nargs="+", metavar="CID")
    sub = command("gc", cmd_gc, "Remove blocks that no pin reaches; lists them first.")
    sub.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    sub.add_argument("--yes", action="store_true", help="remove without asking")
    command("fsck", cmd_fsck, "Re-hash every block and check every pin is complete; exit 3 on damage.")
    command("status", cmd_status, "Show the home folder, pins, blocks and disk use.")
    sub = command("inspect", cmd_inspect, "Read an image's generation metadata without storing anything.")
    sub.add_argument("files", nargs="+", type=Path, metavar="FILE",
                     help="PNG, JPEG or WebP files (sidecars with the same stem are read too)")
    sub = command("show", cmd_show, "Show a work's generation parameters and provenance.")
    sub.add_argument("work", metavar="WORK", help="the work's CID")
    sub = command("verify", cmd_verify, "Check works' signatures and that every block they link is intact; "
                  "exit 3 on damage, 4 if a block is missing.")
    sub.add_argument("works", nargs="+", metavar="WORK")
    sub = command("restore", cmd_restore, "Write a work back out: the original image byte for byte, "
                  "params.json, the workflow JSON, an A1111-style parameters.txt and its sidecars.")
    sub.add_argument("work", metavar="WORK")
    sub.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder to write into")
    sub.add_argument("--force", action="store_true", help="overwrite files that exist in DIR")
    sub = command("serve", cmd_serve, "Run the daemon: trustless gateway, Pinning Service API and Kubo "
                  "RPC subset over HTTP, until SIGTERM or Ctrl-C.")
    sub.add_argument("--listen", metavar="HOST:PORT",
                     help="address to listen on (default: serve.listen, 127.0.0.1:8737; port 0 picks one)")
    command("id", cmd_id, "Print this node's peer ID, the identity that signs its works and that other "
            "nodes check when they add it as a peer place.")
    sub = command("place", cmd_place, "Manage places that keep copies: Kubo nodes, pinning services, "
                  "IPFS Cluster, other artkeep nodes, and read-only gateways.", json_flag=False)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a place", description="Add a place; copies are queued for "
                             "every pin the policy lets it hold. docs/places.md lists each kind's options.")
    add.add_argument("name", metavar="NAME", help="a short name (letters, digits, . _ -)")
    add.add_argument("kind", metavar="KIND", choices=KINDS, help=f"one of: {', '.join(KINDS)}")
    add.add_argument("url", metavar="URL", help="base URL of its API")
    add.add_argument("--token", help="bearer token, or USER:PASSWORD for basic auth (visible in the process "
                     "list: prefer --token-file or $ARTKEEP_PLACE_TOKEN)")
    add.add_argument("--token-file", type=Path, metavar="FILE", help="read the token from FILE (- for stdin)")
    add.add_argument("--option", action="append", metavar="KEY=VALUE", help="a kind-specific option "
                     "(repeatable), e.g. gateway=URL, public_key=PEER_ID, replication_min=2")
    add.add_argument("--quota", metavar="SIZE", help="most DAG bytes to place there, e.g. 50GB")
    add.add_argument("--holds", choices=HOLDS, default="all", help="what it may hold: all pins (default), "
                     "only works, or only plain pins")
    for action, text in (("ls", "list places (secrets are never shown)"),
                         ("rm", "forget places and their copies (the places keep what they have)")):
        parser_of_action = actions.add_parser(action, help=text, description=text)
        if action == "rm":
            parser_of_action.add_argument("names", nargs="+", metavar="NAME")
    for parser_of_action in actions.choices.values():
        parser_of_action.add_argument("--json", action="store_true", help=JSON_HELP)
    sub = command("push", cmd_push, "Queue copies of pins on places until each has replication.copies, and "
                  "send them now with progress (the daemon also drains the queue on its own).")
    sub.add_argument("works", nargs="*", metavar="CID", help="pins to push (default: every pin)")
    sub.add_argument("--wait", action="store_true", help="keep going, through retries, until the queue is "
                     "drained or only permanent failures remain")
    sub.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait, give up after this long")
    sub.add_argument("--retry", action="store_true", help="retry copies that failed for good or were "
                     "corrupt (after fixing a token or quota)")
    sub = command("whereis", cmd_whereis, "Show every place's copy of a pin: pending, pushed, claimed, "
                  "verified, failing or corrupt, when it was last checked, and the odds the "
                  "sampled audits give.")
    sub.add_argument("cids", nargs="+", metavar="CID")
    sub = command("audit", cmd_audit, "Check that places still hold the bytes of each pin (and the local "
                  "store too): the checks that are due, or with --now every copy; exit 3 if a copy is "
                  "corrupt, 1 if one is missing or unreachable.")
    sub.add_argument("cids", nargs="*", metavar="CID", help="pins to audit (default: every pin)")
    sub.add_argument("--now", action="store_true", help="check every copy now, due or not (default level: "
                     "sampled)")
    sub.add_argument("--level", choices=LEVELS, help="presence (the place's word), sampled (random blocks "
                     "re-hashed), full (every block) or local (this node's store, healed from verified "
                     "copies); default: every level that is due")
    sub = command("token", cmd_token, "Manage API tokens for the daemon's write and admin endpoints.",
                  json_flag=False)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("create", "create a token and print its secret (shown only once)"),
                         ("list", "list tokens (ids and labels; secrets are never stored)"),
                         ("revoke", "revoke tokens by id")):
        parser_of_action = actions.add_parser(action, help=text, description=text)
        parser_of_action.add_argument("--json", action="store_true",
                                      help="one JSON object per line on stdout")
        if action == "create":
            parser_of_action.add_argument("--name", default="token", help="a label to recognize it by")
        if action == "revoke":
            parser_of_action.add_argument("ids", nargs="+", metavar="ID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    out = Output(getattr(args, "json", False))
    try:
        args.home = (args.home or config.default_home(os.environ)).expanduser()
        args.config = _load_config(args)
        logs.setup(str(args.config["log.level"]), str(args.config["log.format"]))
        return int(args.handler(args, out))
    except NodeError as exc:
        if out.as_json:
            out.result({"error": exc.message}, "")
        else:
            out.note(f"artkeep: {exc.message}")
        return exc.exit_code
    except KeyboardInterrupt:
        out.note("artkeep: interrupted; rerun the same command to finish")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`artkeep cat CID | head`); nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _load_config(args: argparse.Namespace) -> config.Config:
    path = args.config or args.home / "config.toml"
    values: dict[str, Any] = {}
    if args.config is not None or path.exists():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PathError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"config {path}: {exc}") from None
    return config.build(values, os.environ)


if __name__ == "__main__":
    sys.exit(main())
