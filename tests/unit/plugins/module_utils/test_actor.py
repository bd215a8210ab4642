"""Who is acting: AWX's user and job from the play's variables, else the controller's user."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._actor import actor, controller_user


def test_awx_user_and_job_come_from_the_extra_variables():
    assert actor({"awx_user_name": "alice", "awx_job_id": 4711}, environ={"USER": "runner"}) == {
        "user": "alice", "job": "4711", "via": "awx"}


def test_tower_names_serve_when_the_awx_names_are_missing():
    assert actor({"tower_user_name": "bob", "tower_job_id": "12"}, environ={}) == {
        "user": "bob", "job": "12", "via": "awx"}


def test_a_scheduled_job_without_a_user_still_names_its_job():
    assert actor({"awx_job_id": 99, "awx_user_name": ""}, environ={"USER": "runner"}) == {
        "user": "awx", "job": "99", "via": "awx"}


def test_outside_awx_the_person_behind_sudo_is_named_not_root():
    assert actor({}, environ={"SUDO_USER": "carol", "USER": "root"}) == {
        "user": "carol", "job": None, "via": "controller"}
    assert controller_user({"USER": "dave"}) == "dave"
