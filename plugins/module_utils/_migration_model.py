# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""How long a migration will take, learned from what earlier migrations took.

The audit ledger (every move any drain or return made) and each VM's own metadata history (its last moves, kept
in its domain XML) are the observations. From them:

- per host pair (source -> destination): a fixed cost per migration (starting QEMU on the destination, the
  handshakes, stopping QEMU on the source) and a rate (bytes sent per second), fitted by least squares over the
  pair's migrations: seconds = fixed + bytes / rate;
- per host pair, the clean-up after the switch-over: how long libvirt went on after the VM already ran on the
  destination (stopping QEMU on the source). The engine frees the move's slot at the switch-over, so the next
  move starts while that clean-up runs: a slot is held for the predicted time minus this tail, and a wave ends
  when its last move's whole time is over. Learned from ledger entries that say when the switch-over came
  (`switchover_s`); none (0 s) where no entry says it, as in the default model;
- per VM: how many bytes its migrations sent (memory plus what it dirtied while it moved, so a busy VM counts
  for more than its size), its dirty rate, how long it took, how long it went on after its own switch-over, and
  whether it needed escalation.

A move is predicted from the VM's own history first: the median of its recent moves on the same host pair; a VM
that moved only on other pairs gets the pair's figure plus how much longer (or shorter) than their pairs' figures
its own moves took (a guest dirtying memory, or copying a disk, stays slower than the fit). The pair's figure is
its fixed cost plus the VM's usual bytes (for a VM never moved its memory, one pass, plus the disks it copies) at
the pair's rate; a pair never seen uses what all pairs show. Likewise a move's clean-up tail is the VM's own
(same pair, then any pair), else its pair's, else all pairs': on the lab it ranged from under a second for idle
guests to 5 s for a Linux guest dirtying memory, so a median per pair mispredicted whichever VM went last in a
wave. A VM's own duration and switch-over come from the same moves, so they stay consistent with each other:
weighing them against the pair's figures (tried: half and half after one move) mixed a slot time from one move
with an end from others, and on three lab ledgers missed a drain's span by up to 42 %, against at most 19 % from
the VMs' own moves alone. The
default model, with no history at all, is DEFAULT_FIXED_S plus one pass over memory at the planner's bandwidth:
the figures of an idle guest on the lab (about 0.7 s of libvirt job and 1.3 s of clean-up on the source per
migration).

The durations are as the engine saw them, with other migrations running beside them (max_parallel), so they
already carry the slow-down of sharing the host; the planner schedules them on max_parallel slots.

Only representative moves teach the model times (representative()): a move under a bandwidth limit measures the
limit, and a move that ran into a fault (a monitoring error, a repair, a post-copy resume, a needs-attention
verdict) measures the fault, not the host pair or the VM. Such moves still say whether the VM needed escalation.
"""

from __future__ import annotations

import statistics

MIB = 1024 * 1024

# The default model (no history): per migration, what an idle guest costs on the lab beyond its memory pass.
DEFAULT_FIXED_S = 2.0
# Observations kept per VM (the most recent), as the VM's metadata keeps its last moves.
RECENT_PER_VM = 5
# A least-squares fit needs migrations of different sizes; below this spread the rate is not trusted.
MIN_SIZE_SPREAD = 1.25


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _names(*values):
    # The ledger can be edited by hand and metadata is whatever the VM's XML says: names must be plain strings.
    return all(isinstance(value, str) and value for value in values)


def _flag(value):
    # Metadata attributes are text.
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def observation(vm, source, destination, seconds, data_bytes=None, downtime_ms=None, downtime_limit_ms=None,
                postcopy=False, escalated=False, dirty_rate_mib_s=None, at=None, bandwidth_limit_mib_s=None,
                faulted=False, switchover_s=None):
    return {"vm": vm, "source": source, "destination": destination, "seconds": seconds, "data_bytes": data_bytes,
            "switchover_s": switchover_s if switchover_s is not None and switchover_s <= seconds else None,
            "downtime_ms": downtime_ms, "downtime_limit_ms": downtime_limit_ms, "postcopy": bool(postcopy),
            "escalated": bool(escalated), "dirty_rate_mib_s": dirty_rate_mib_s, "at": at,
            "bandwidth_limit_mib_s": bandwidth_limit_mib_s, "faulted": bool(faulted)}


def not_representative(obs):
    """Why a move's time says nothing about its host pair or its VM (None: it does)."""
    if obs.get("bandwidth_limit_mib_s"):
        return "throttled"
    if obs.get("faulted"):
        return "faulted"
    return None


def observations_from_ledger(entries):
    """Successful live migrations of the ledger as observations, oldest first."""
    found = []
    for entry in entries or []:
        if not isinstance(entry, dict) or entry.get("outcome") != "migrated" or entry.get("mode") == "offline":
            continue
        seconds = _number(entry.get("duration_s"))
        if not seconds or not _names(entry.get("vm"), entry.get("source"), entry.get("destination")):
            continue
        found.append(observation(
            entry["vm"], entry["source"], entry["destination"], seconds, _number(entry.get("data_bytes")),
            entry.get("downtime_ms"), _number(entry.get("downtime_limit_ms")), entry.get("postcopy") is True,
            entry.get("escalated") is True, _number(entry.get("dirty_rate_mib_s")), entry.get("time"),
            _number(entry.get("bandwidth_limit_mib_s")), entry.get("faulted") is True,
            _number(entry.get("switchover_s"))))
    return found


def observations_from_metadata(vm_name, metadata):
    """A VM's own history (hypervisor_info's metadata.moves) as observations."""
    found = []
    for move in (metadata or {}).get("moves") or []:
        if not isinstance(move, dict) or move.get("outcome") != "migrated":
            continue
        seconds = _number(move.get("seconds"))
        if not seconds or not _names(vm_name, move.get("from"), move.get("to")):
            continue
        found.append(observation(vm_name, move["from"], move["to"], seconds, _number(move.get("data_bytes")),
                                 move.get("downtime_ms"), _number(move.get("downtime_limit_ms")),
                                 _flag(move.get("postcopy")), _flag(move.get("escalated")), None, move.get("at"),
                                 _number(move.get("bandwidth_limit_mib_s")), _flag(move.get("faulted")),
                                 _number(move.get("switchover_s"))))
    return found


def fit_pair(points):
    """(fixed_s, bytes_per_s) from [(bytes, seconds)] by least squares, kept physical (no negative cost, no
    negative rate); None when the sizes do not vary enough to tell a rate from a fixed cost."""
    sized = [(b, s) for b, s in points if b]
    if len(sized) < 2 or max(b for b, _s in sized) < MIN_SIZE_SPREAD * min(b for b, _s in sized):
        return None
    mean_b = statistics.fmean(b for b, _s in sized)
    mean_s = statistics.fmean(s for _b, s in sized)
    slope = (sum((b - mean_b) * (s - mean_s) for b, s in sized) / sum((b - mean_b) ** 2 for b, _s in sized))
    if slope <= 0:
        return None
    fixed = mean_s - slope * mean_b
    if fixed < 0:
        # Through the origin: all of it rate.
        return 0.0, sum(b for b, _s in sized) / sum(s for _b, s in sized)
    return fixed, 1.0 / slope


def tail_after_switchover(observations):
    """Seconds a migration went on after the VM ran on its destination (median), or None if none says."""
    tails = [o["seconds"] - o["switchover_s"] for o in observations if o.get("switchover_s") is not None]
    return statistics.median(tails) if tails else None


def fixed_at_rate(points, rate):
    """The fixed cost that fits [(bytes, seconds)] best at a known rate (median, so one outlier does not count)."""
    return max(0.0, statistics.median(s - (b or 0) / rate for b, s in points))


class MigrationModel:
    """Predicts each move from the observations; describe() says what it learned, for the plan's output.

    The rate is fitted over all observations together (sizes vary more across a fleet than on one pair); a pair
    with migrations of its own different enough in size gets its own rate, every other pair its own fixed cost
    at the common rate. Each VM's own recent moves come first where it has some (predict, slot_seconds)."""

    def __init__(self, observations=(), bandwidth_mib_s=100.0, default_fixed_s=DEFAULT_FIXED_S):
        self.bandwidth_bps = float(bandwidth_mib_s) * MIB
        self.default_fixed_s = default_fixed_s
        self.pairs = {}
        self.vms = {}
        # Each VM's recent representative moves per host pair: (vm, source, destination) -> [observation].
        self.vm_pairs = {}
        # Every move of each VM (representative or not) for what its last migration needed.
        self.last_move = {}
        self.left_out = {}
        observations = list(observations)
        for obs in observations:
            self.last_move[obs["vm"]] = obs
            why = not_representative(obs)
            if why:
                self.left_out[why] = self.left_out.get(why, 0) + 1
        observations = [o for o in observations if not not_representative(o)]
        by_pair = {}
        for obs in observations:
            by_pair.setdefault((obs["source"], obs["destination"]), []).append(obs)
            self.vms.setdefault(obs["vm"], []).append(obs)
            self.vm_pairs.setdefault((obs["vm"], obs["source"], obs["destination"]), []).append(obs)
        common = fit_pair([(o["data_bytes"], o["seconds"]) for o in observations])
        self.rate_bps = common[1] if common else self.bandwidth_bps
        self.fixed_s = common[0] if common else (
            fixed_at_rate([(o["data_bytes"], o["seconds"]) for o in observations], self.rate_bps)
            if observations else default_fixed_s)
        self.tail_s = tail_after_switchover(observations) or 0.0
        for pair, found in by_pair.items():
            points = [(o["data_bytes"], o["seconds"]) for o in found]
            own = fit_pair(points) if len(points) >= 3 else None
            fixed, rate = own or (fixed_at_rate(points, self.rate_bps), self.rate_bps)
            tail = tail_after_switchover(found)
            self.pairs[pair] = {"fixed_s": fixed, "rate_bps": rate, "migrations": len(found),
                                "tail_s": self.tail_s if tail is None else tail}
        for name in self.vms:
            self.vms[name] = self.vms[name][-RECENT_PER_VM:]
        for key in self.vm_pairs:
            self.vm_pairs[key] = self.vm_pairs[key][-RECENT_PER_VM:]
        # How much longer than its pairs' figures each VM's own moves took (median over its recent moves).
        # Only moves that say what they sent tell time beyond the bytes.
        self.vm_excess_s = {}
        for name, found in self.vms.items():
            excess = [o["seconds"] - self._pair_seconds(o["source"], o["destination"], o["data_bytes"])[0]
                      for o in found if o["data_bytes"]]
            if excess:
                self.vm_excess_s[name] = statistics.median(excess)

    @classmethod
    def from_history(cls, ledger_entries=(), vms_metadata=None, bandwidth_mib_s=100.0):
        """The ledger's observations, and each VM's own history for VMs the ledger does not know (so that a
        controller without the ledger still learns; a move in both is counted once)."""
        found = observations_from_ledger(ledger_entries)
        known = {o["vm"] for o in found}
        for name, metadata in (vms_metadata or {}).items():
            if name not in known:
                found += observations_from_metadata(name, metadata)
        return cls(found, bandwidth_mib_s)

    def vm_history(self, name):
        """What the VM's recent migrations say: typical bytes and seconds, dirty rate, the last escalation."""
        found = self.vms.get(name) or []
        last = self.last_move.get(name)
        if last is None:
            return None
        sizes = [o["data_bytes"] for o in found if o["data_bytes"]]
        dirty = [o["dirty_rate_mib_s"] for o in found if o["dirty_rate_mib_s"] is not None]
        return {"migrations": len(found), "data_bytes": statistics.median(sizes) if sizes else None,
                "seconds": statistics.median(o["seconds"] for o in found) if found else None,
                "dirty_rate_mib_s": statistics.median(dirty) if dirty else None,
                "tail_after_switchover_s": self._vm_tail(name, None, None),
                "escalated": last["escalated"], "downtime_limit_ms": last["downtime_limit_ms"],
                "postcopy": last["postcopy"]}

    def _size(self, name, fallback):
        """Bytes the VM's next move sends: what its recent moves sent (median), else `fallback`."""
        sizes = [o["data_bytes"] for o in self.vms.get(name) or () if o["data_bytes"]]
        return statistics.median(sizes) if sizes else fallback

    def _pair_seconds(self, source, destination, size, what=None):
        """(seconds, basis) for `size` bytes on the pair: its own figures, else all pairs', else the default."""
        what = what or "%.0f MiB" % (size / MIB)
        pair = self.pairs.get((source, destination))
        if pair is not None:
            return pair["fixed_s"] + size / pair["rate_bps"], "%s->%s over %d migrations: %.1f s + %s at %.0f MiB/s" % (
                source, destination, pair["migrations"], pair["fixed_s"], what, pair["rate_bps"] / MIB)
        if self.vms:
            return self.fixed_s + size / self.rate_bps, "all pairs: %.1f s + %s at %.0f MiB/s" % (
                self.fixed_s, what, self.rate_bps / MIB)
        return (self.default_fixed_s + size / self.bandwidth_bps,
                "default model: %.0f s + %s at %.0f MiB/s" % (self.default_fixed_s, what, self.bandwidth_bps / MIB))

    def predict(self, name, source, destination, memory_bytes, disk_bytes=0):
        """(seconds, basis): the predicted duration of moving VM `name` and what the figure rests on: its own
        recent moves on the pair, else the pair's figure corrected by how its own moves elsewhere ran against
        their pairs' figures, else the pair's figure."""
        own = self.vm_pairs.get((name, source, destination))
        if own:
            return statistics.median(o["seconds"] for o in own), "%s's own last %d on %s->%s" % (
                name, len(own), source, destination)
        size = self._size(name, None)
        what = None if size is None else "%.0f MiB (as it last sent)" % (size / MIB)
        seconds, basis = self._pair_seconds(source, destination, size or memory_bytes + disk_bytes, what)
        excess = self.vm_excess_s.get(name)
        if excess is None:
            return seconds, basis
        # Never below a tenth of the pair's figure: an excess learned on a slow pair must not make a move free.
        return max(seconds + excess, seconds * 0.1), "%s, %+.1f s as its own moves ran" % (basis, excess)

    def _vm_tail(self, name, source, destination):
        """The VM's own clean-up after its switch-over (median) on the pair, else on any pair; None if none of
        its moves said when it switched over."""
        for found in (self.vm_pairs.get((name, source, destination)), self.vms.get(name)):
            tail = tail_after_switchover(found or ())
            if tail is not None:
                return tail
        return None

    def slot_seconds(self, source, destination, seconds, name=None):
        """How long a move predicted at `seconds` holds its slot: until the switch-over, not to the end of the
        source's clean-up (the engine frees the slot then). The clean-up is the VM's own where its moves said
        when they switched over, else its pair's, else all pairs'. Never less than a tenth of the move."""
        tail = self._vm_tail(name, source, destination) if name is not None else None
        if tail is None:
            pair = self.pairs.get((source, destination))
            tail = pair["tail_s"] if pair is not None else self.tail_s
        return max(seconds - tail, seconds * 0.1)

    def describe(self):
        """The learned figures, as the plan returns them. Per VM only counts and the range of the clean-up tails
        (a fleet has thousands of VMs; each move's prediction names its own basis)."""
        tails = [t for t in (self._vm_tail(name, None, None) for name in self.vms) if t is not None]
        return {
            "default": {"fixed_s": self.default_fixed_s, "rate_mib_s": round(self.bandwidth_bps / MIB, 1)},
            "all_pairs": {"fixed_s": round(self.fixed_s, 2), "rate_mib_s": round(self.rate_bps / MIB, 1),
                          "tail_after_switchover_s": round(self.tail_s, 2)},
            "pairs": [{"source": s, "destination": d, "fixed_s": round(p["fixed_s"], 2),
                       "rate_mib_s": round(p["rate_bps"] / MIB, 1), "migrations": p["migrations"],
                       "tail_after_switchover_s": round(p["tail_s"], 2)}
                      for (s, d), p in sorted(self.pairs.items())],
            "vms_with_history": len(self.vms),
            # VMs whose own moves said when they switched over, and the range of their clean-up tails.
            "vms_with_own_tail": len(tails),
            "vm_tail_after_switchover_s": {"min": round(min(tails), 2), "max": round(max(tails), 2)} if tails else None,
            # Moves whose time was not learned, by why (throttled, faulted).
            "left_out": dict(sorted(self.left_out.items())),
        }
