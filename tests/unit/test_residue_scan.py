"""The residue scan itself (tests/support/residue.py): what it must find, and what is not ours."""

from __future__ import annotations

from support.residue import keys_of_ours


def test_finds_keys_at_any_depth_and_our_finalizers() -> None:
    replica_set = {
        "metadata": {
            "annotations": {"deployment.kubernetes.io/revision": "2", "chaos.coordinator.dev/injection-ab12": "{}"},
            "finalizers": ["kubernetes", "chaos.coordinator.dev/finalizer"],
        },
        "spec": {"template": {"metadata": {"labels": {"app": "web", "chaos.coordinator.dev/run": "x"}}}},
    }
    assert sorted(keys_of_ours(replica_set)) == [
        "metadata.annotations.chaos.coordinator.dev/injection-ab12",
        "metadata.finalizers[1]: chaos.coordinator.dev/finalizer",
        "spec.template.metadata.labels.chaos.coordinator.dev/run",
    ]


def test_other_groups_and_values_naming_us_are_not_keys_of_ours() -> None:
    pod = {
        "metadata": {"annotations": {"example.com/chaos.coordinator.dev": "x", "note": "chaos.coordinator.dev/abort"}},
        "spec": {"containers": [{"name": "app", "image": "web"}]},
    }
    assert list(keys_of_ours(pod)) == []


def test_the_tests_own_keys_can_be_left_out() -> None:
    """The real tier's workloads select the real node by its label, which is under our group too."""
    pod = {"spec": {"nodeSelector": {"chaos.coordinator.dev/node": "real"}}, "metadata": {"annotations": {}}}
    assert list(keys_of_ours(pod)) == ["spec.nodeSelector.chaos.coordinator.dev/node"]
    assert list(keys_of_ours(pod, ignore={"chaos.coordinator.dev/node"})) == []
