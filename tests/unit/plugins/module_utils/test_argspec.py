"""One option spec: live_migrate's migration-policy options are defined once (_argspec.py, from the engine's
constants); the roles' argument specs and docs/live_migrate.md, which repeat them for users, must not drift."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from ansible_collections.hvmaint.libvirt.plugins.module_utils._argspec import migration_policy_spec
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLICY_OPTIONS
from ansible_collections.hvmaint.libvirt.plugins.modules import live_migrate

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
ROLE_OPTIONS = [("drain_host", "drain_host_migration"), ("return_host", "return_host_migration"),
                ("rebalance", "rebalance_migration"), ("evacuate_site", "evacuate_site_migration")]


def role_migration_options(role, option):
    with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    return spec["argument_specs"]["main"]["options"][option]["options"]


def test_the_spec_covers_exactly_the_engines_policy_options():
    assert set(migration_policy_spec()) == set(POLICY_OPTIONS)
    spec = live_migrate.argument_spec()
    for name, option in migration_policy_spec().items():
        assert spec[name] == option, name


def same_option(name, declared, single):
    """What a role declares for an option must be what the single spec says (a role may leave out a default)."""
    assert declared.get("type") == single["type"], "%s: type" % name
    assert declared.get("elements") == single.get("elements"), "%s: elements" % name
    assert declared.get("choices") == single.get("choices"), "%s: choices" % name
    if "default" in declared:
        assert declared["default"] == single.get("default"), "%s: default" % name
    for sub, sub_declared in (declared.get("options") or {}).items():
        assert sub in single.get("options", {}), "%s.%s is not an option of live_migrate" % (name, sub)
        same_option("%s.%s" % (name, sub), sub_declared, single["options"][sub])


@pytest.mark.parametrize("role, option", ROLE_OPTIONS)
def test_roles_pass_the_migration_options_as_live_migrate_declares_them(role, option):
    single = live_migrate.argument_spec()
    declared = role_migration_options(role, option)
    for name, spec in declared.items():
        assert name in single, "%s.%s is not an option of live_migrate" % (option, name)
        same_option("%s.%s" % (option, name), spec, single[name])


def documented_defaults():
    """{option: default text} from the tables of docs/live_migrate.md (`escalation.x` for sub-options)."""
    with open(os.path.join(ROOT, "docs", "live_migrate.md"), encoding="utf-8") as handle:
        rows = re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)`", handle.read(), flags=re.M)
    return dict(rows)


def test_docs_show_the_defaults_of_the_single_spec():
    documented = documented_defaults()
    expected = {}
    for name, option in migration_policy_spec().items():
        if name == "escalation":
            for sub, sub_option in option["options"].items():
                expected["escalation." + sub] = sub_option["default"]
        else:
            expected[name] = option["default"]
    for name, default in expected.items():
        assert name in documented, "docs/live_migrate.md has no row for %s" % name
        assert yaml.safe_load(documented[name]) == default, "docs/live_migrate.md: %s" % name
