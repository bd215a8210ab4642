# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to hvmaint.libvirt: what an evacuation plan hands on, so roles pass it along without reshaping it.

Moves in the shape live_migrate's `moves` option takes (with each destination's migration URI), and the lines a
drain or a return reports about what moved where.
"""

from __future__ import annotations


def live_migrate_moves(moves, migration_uris=None):
    """The plan's moves as live_migrate's `moves` items: name, destination and, where the inventory gives one,
    the destination's migration URI (else live_migrate derives it from the destination's name)."""
    migration_uris = migration_uris or {}
    return [{"name": move["vm"], "destination": move["destination"],
             "destination_uri": migration_uris.get(move["destination"])} for move in moves]


def add_live_migrate_moves(plan, migration_uris=None):
    """Give the plan and each of its waves `live_migrate_moves`."""
    plan["live_migrate_moves"] = live_migrate_moves(plan.get("moves") or (), migration_uris)
    for wave in plan.get("waves") or ():
        wave["live_migrate_moves"] = live_migrate_moves(wave.get("moves") or (), migration_uris)
    return plan


def drain_lines(moves):
    return ["%s -> %s (%s)" % (move["vm"], move["destination"], move.get("tier")) for move in moves] \
        or ["nothing to move"]


def return_lines(moves, home):
    return ["%s <- %s" % (move["vm"], move.get("source")) for move in moves] or ["every VM of %s is home" % home]
