"""The offline engine: runs the program as the Pulumi language host does, against mocks.

One implementation, shared by the offline preview and the tests. It records every resource
registration (inputs as the engine receives them, camelCase), every invoke, and the stack
outputs. It imports nothing from the program, so that it can load the program exactly as
`pulumi up` would: `runpy.run_path(main_dir)` inside `run_in_stack`, with `main_dir` first on
`sys.path`.

Applies run: the runtime is configured with `dry_run=False`, so every `Output` resolves.
"""

from __future__ import annotations

import asyncio
import logging
import runpy
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack

MASKED = "[secret]"
STACK_TYPE = "pulumi:pulumi:Stack"
FAKE_ACCOUNT_ID = "123456789012"


def is_secret(value: Any) -> bool:
    return bool(rpc.is_rpc_secret(value))


def reveal(value: Any) -> Any:
    """The value inside a secret wrapper, for tests that check where a secret is wired."""
    return rpc.unwrap_rpc_secret(value)


def mask_secrets(value: Any) -> Any:
    """A JSON-ready copy of `value` with every secret replaced by "[secret]".

    Protobuf carries every number as a double; whole numbers come back as ints.
    """
    if is_secret(value):
        return MASKED
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: mask_secrets(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class ResourceRecord:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str | None
    provider: str | None
    dependencies: list[str]
    protect: bool
    inputs: dict[str, Any]
    aliases: list[dict[str, Any]] = field(default_factory=list)
    # What the fake provider answered: inputs plus ids, ARNs, endpoints. Not in the JSON plan,
    # which shows what the program asks for.
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "custom": self.custom,
            "parent": self.parent,
            "provider": self.provider,
            "dependencies": list(self.dependencies),
            "protect": self.protect,
            "aliases": self.aliases,
            "inputs": mask_secrets(self.inputs),
        }


@dataclass
class InvokeRecord:
    token: str
    args: dict[str, Any]
    provider: str | None


@dataclass
class ProgramRun:
    project: str
    stack: str
    resources: list[ResourceRecord]
    invokes: list[InvokeRecord]
    outputs: dict[str, Any]
    log: list[tuple[str, str]]

    def of_type(self, type_: str) -> list[ResourceRecord]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> ResourceRecord:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} named {name!r}, found {len(found)}")
        return found[0]

    def by_urn(self, urn: str) -> ResourceRecord:
        return next(r for r in self.resources if r.urn == urn)

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": [r.to_json() for r in self.resources],
            "outputs": mask_secrets(self.outputs),
        }


def _stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class FakeCloud(pulumi_mocks.Mocks):
    """Realistic fake provider answers: ids, ARNs and endpoints shaped like AWS's own.

    Invokes without a handler raise, so that a new invoke in the program cannot silently
    return nothing under test.
    """

    def __init__(self, account_id: str = FAKE_ACCOUNT_ID) -> None:
        self.account_id = account_id
        self._provider_regions: dict[str, str] = {}
        self.invokes: list[InvokeRecord] = []
        # Every resource the engine was asked to create, by type and name, in order.
        self.created: list[tuple[str, str]] = []
        self._invoke_handlers: dict[str, Callable[[pulumi_mocks.MockCallArgs], dict[str, Any]]] = {
            "aws:index/getCallerIdentity:getCallerIdentity": self._caller_identity,
            "aws:index/getPartition:getPartition": lambda _: {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            },
            "aws:index/getRegion:getRegion": lambda call: {
                "id": self._region(call.provider),
                "region": self._region(call.provider),
                "name": self._region(call.provider),
                "endpoint": f"ec2.{self._region(call.provider)}.amazonaws.com",
                "description": "offline region",
            },
        }

    def _region(self, provider_ref: str | None) -> str:
        provider_id = (provider_ref or "").rpartition("::")[2]
        return self._provider_regions.get(provider_id, "us-east-1")

    def _caller_identity(self, _: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        return {
            "id": self.account_id,
            "accountId": self.account_id,
            "arn": f"arn:aws:sts::{self.account_id}:assumed-role/offline-preview/session",
            "userId": "AROAOFFLINEPREVIEW:session",
        }

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.invokes.append(InvokeRecord(args.token, dict(args.args), args.provider or None))
        handler = self._invoke_handlers.get(args.token)
        if handler is None:
            raise NotImplementedError(
                f"the offline engine has no answer for invoke {args.token}; "
                "add one to FakeCloud in infra/mock_engine.py"
            )
        return handler(args), []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        self.created.append((args.typ, args.name))
        resource_uuid = _stable_uuid(runtime_settings.get_stack(), args.typ, args.name)
        if args.typ.startswith("pulumi:providers:"):
            if args.typ == "pulumi:providers:aws":
                self._provider_regions[resource_uuid] = str(inputs.get("region", "us-east-1"))
            return resource_uuid, inputs
        region = self._region(args.provider)
        service = args.typ.split(":")[1].split("/")[0] if args.typ.startswith("aws:") else ""
        arn_base = f"arn:aws:{service}:{region}:{self.account_id}"
        physical = str(inputs.get("name") or f"{args.name}-{resource_uuid[:7]}")

        if args.typ == "aws:kms/key:Key":
            return resource_uuid, {
                **inputs,
                "keyId": resource_uuid,
                "arn": f"{arn_base}:key/{resource_uuid}",
            }
        if args.typ == "aws:kms/alias:Alias":
            return physical, {**inputs, "arn": f"{arn_base}:{physical}"}
        if args.typ == "aws:sns/topic:Topic":
            arn = f"{arn_base}:{physical}"
            return arn, {**inputs, "arn": arn, "owner": self.account_id}
        if args.typ == "aws:sns/topicSubscription:TopicSubscription":
            topic_arn = str(reveal(inputs.get("topic", f"{arn_base}:topic")))
            arn = f"{topic_arn}:{resource_uuid}"
            return arn, {**inputs, "arn": arn, "ownerId": self.account_id}
        if args.typ == "aws:sns/topicPolicy:TopicPolicy":
            return str(reveal(inputs.get("arn", physical))), inputs
        outputs = {**inputs}
        if args.typ.startswith("aws:"):
            outputs.setdefault("arn", f"{arn_base}:{physical}")
        return physical if "name" in inputs else resource_uuid, outputs


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """pulumi's MockMonitor, plus a record of each registration's options and the stack outputs."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []
        self.stack_urn: str | None = None
        self.stack_outputs: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == STACK_TYPE:
            self.stack_urn = response.urn
            return response
        parent = request.parent or None
        self.records.append(
            ResourceRecord(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                parent=None if parent == self.stack_urn else parent,
                provider=request.provider or None,
                dependencies=sorted(set(request.dependencies)),
                protect=bool(request.protect),
                inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                aliases=[MessageToDict(alias) for alias in request.aliases],
                outputs=self.resources[response.urn].state if request.custom else {},
            )
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn == self.stack_urn:
            self.stack_outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelname.lower(), record.getMessage()))


def run_program(
    main_dir: Path,
    project: str,
    stack: str,
    config: Mapping[str, str],
    secret_keys: Iterable[str] = (),
    mocks: FakeCloud | None = None,
) -> ProgramRun:
    """Run the Pulumi program in `main_dir` once, on a fresh event loop with fresh mocks.

    Raises whatever the program raises (after the runtime has settled), as `pulumi up` would.
    """
    cloud = mocks or FakeCloud()
    monitor = RecordingMonitor(cloud)
    logger = logging.getLogger(f"offline-engine.{stack}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _ListHandler()
    logger.handlers = [handler]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The runtime makes its monitor calls on executor threads and gives each thread an event
    # loop of its own. Making those loops here lets us close them when the run ends, instead of
    # leaving them to the garbage collector at interpreter exit.
    thread_loops: list[asyncio.AbstractEventLoop] = []

    def give_thread_a_loop() -> None:
        thread_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(thread_loop)
        thread_loops.append(thread_loop)

    loop.set_default_executor(ThreadPoolExecutor(initializer=give_thread_a_loop))
    runtime_settings.ROOT.set(None)
    runtime_settings.configure(
        pulumi_mocks.MockSettings(
            monitor=monitor,
            monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
            engine=pulumi_mocks.MockEngine(logger),
            project=project,
            stack=stack,
            dry_run=False,
            organization="organization",
            root_directory=str(main_dir.parent),
            callbacks=None,
            outputs=set(),
        )
    )
    set_all_config(dict(config), list(secret_keys))
    main = str(main_dir)

    def program() -> None:
        runpy.run_path(main, run_name="__main__")

    sys.path.insert(0, main)
    try:
        loop.run_until_complete(run_in_stack(program))
    finally:
        sys.path.remove(main)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        for thread_loop in thread_loops:
            thread_loop.close()
        asyncio.set_event_loop(None)
        runtime_settings.ROOT.set(None)
    return ProgramRun(
        project=project,
        stack=stack,
        # Registration order depends on thread timing; URN order is stable run to run.
        resources=sorted(monitor.records, key=lambda r: r.urn),
        invokes=cloud.invokes,
        outputs=monitor.stack_outputs,
        log=handler.messages,
    )
