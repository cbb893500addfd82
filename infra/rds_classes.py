"""What an RDS instance class has: vCPUs and memory, for thresholds that scale with the instance.

DBLoad is judged against the vCPU count, FreeableMemory against the memory, and
DatabaseConnections against PostgreSQL's default `max_connections` on RDS, which RDS derives
from the memory: LEAST(DBInstanceClassMemory / 9531392, 5000).

Only the families the tiers' cost guards allow are listed (Graviton, general purpose and memory
optimised); a class missing here is a config error, not a silently wrong alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

# RDS for PostgreSQL's default: max_connections = LEAST({DBInstanceClassMemory/9531392}, 5000).
_BYTES_PER_CONNECTION = 9_531_392
_MAX_CONNECTIONS_CAP = 5000
# DBInstanceClassMemory is the class's memory less what the OS and RDS keep for themselves
# (about a quarter on the smallest classes). Assuming a quarter everywhere under-estimates
# max_connections on large classes, so a connections alarm fires early, never too late.
_USABLE_MEMORY_SHARE = 0.75
_GIB = 1024**3


@dataclass(frozen=True)
class InstanceClass:
    vcpus: int
    memory_gib: float

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * _GIB)

    @property
    def max_connections(self) -> int:
        """A conservative estimate of the default max_connections on this class."""
        usable = self.memory_bytes * _USABLE_MEMORY_SHARE
        return min(int(usable // _BYTES_PER_CONNECTION), _MAX_CONNECTIONS_CAP)


# size -> vCPUs, shared by the m and r families (Graviton 2 and 3).
_SIZES = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32,
          "12xlarge": 48, "16xlarge": 64}  # fmt: skip
# GiB of memory per vCPU in each family.
_MEMORY_PER_VCPU = {"m6g": 4, "m7g": 4, "r6g": 8, "r7g": 8}

INSTANCE_CLASSES: dict[str, InstanceClass] = {
    "db.t4g.micro": InstanceClass(vcpus=2, memory_gib=1),
    "db.t4g.small": InstanceClass(vcpus=2, memory_gib=2),
    "db.t4g.medium": InstanceClass(vcpus=2, memory_gib=4),
    "db.t4g.large": InstanceClass(vcpus=2, memory_gib=8),
    "db.t4g.xlarge": InstanceClass(vcpus=4, memory_gib=16),
    "db.t4g.2xlarge": InstanceClass(vcpus=8, memory_gib=32),
    **{
        f"db.{family}.{size}": InstanceClass(vcpus=vcpus, memory_gib=vcpus * per_vcpu)
        for family, per_vcpu in _MEMORY_PER_VCPU.items()
        for size, vcpus in _SIZES.items()
    },
}
