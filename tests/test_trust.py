"""Prediction states: uncertain exactly when the interval straddles the threshold, out-of-domain
modalities left out with plain words, patients needing review first."""

from __future__ import annotations

import numpy as np

from medfuse_core.runtime.domain import DomainCheck
from medfuse_core.runtime.trust import (
    ABOVE,
    BELOW,
    OUT_OF_DOMAIN,
    PATIENT_STATES,
    UNCERTAIN,
    label_states,
    modalities_to_use,
    out_of_domain_reason,
    patient_trust,
)


def test_uncertain_only_when_the_decision_differs_between_the_interval_ends() -> None:
    p = np.array([0.62, 0.62, 0.30, 0.30, 0.50])
    t = np.array([0.60, 0.60, 0.40, 0.40, 0.50])
    low = np.array([0.55, 0.61, 0.20, 0.10, 0.50])
    high = np.array([0.70, 0.70, 0.39, 0.40, 0.90])
    # 1: 0.55 < 0.60 <= 0.70 straddles; 2: all above; 3: all below; 4: high end reaches the threshold (0.40 >= 0.40);
    # 5: low end equal to the threshold is still a positive decision at both ends
    assert label_states(p, t, low, high) == [UNCERTAIN, ABOVE, BELOW, UNCERTAIN, ABOVE]
    assert label_states(p, t, None, None) == [ABOVE, ABOVE, BELOW, BELOW, ABOVE]  # no intervals: nothing claimed


def test_out_of_domain_modalities_are_left_out_and_said_in_plain_words() -> None:
    checks = [DomainCheck(True, {"labs": 1.0, "image": 40.0}, {"labs": 5.0, "image": 15.0}, {"labs": False, "image": True}),
              DomainCheck(True, {"labs": 1.0}, {"labs": 5.0}, {"labs": False})]
    present = np.array([[True, False, False, True], [True, False, False, False]])
    used, left_out = modalities_to_use(present, checks, exclude=True)
    assert used.tolist() == [[True, False, False, False], [True, False, False, False]]
    assert left_out == [["image"], []]
    kept, none = modalities_to_use(present, checks, exclude=False)
    assert kept.tolist() == present.tolist() and none == [[], []]
    trust = patient_trust(np.array([0.9]), np.array([0.5]), checks[0], ["image"], np.array([0.8]), np.array([1.0]), 0.9)
    assert trust.status == OUT_OF_DOMAIN and trust.needs_review
    assert trust.reason == ("The chest film did not look like the data the model was trained on, so it was left out "
                            "of this prediction.")
    labs_only = DomainCheck(True, {"labs": 9.0}, {"labs": 5.0}, {"labs": True})
    assert out_of_domain_reason(labs_only) == ("The labs did not look like the data the model was trained on, so "
                                               "they were left out of this prediction.")  # a plural word, one modality
    as_dict = trust.to_dict()
    assert as_dict["left_out"] == ["image"] and as_dict["domain"]["out_of_domain"] == ["image"]
    assert trust.label_dict(0) == {"state": ABOVE, "interval": {"low": 0.8, "high": 1.0, "level": 0.9}}
    calm = patient_trust(np.array([0.9]), np.array([0.5]), checks[1], [], np.array([0.8]), np.array([1.0]), 0.9)
    assert calm.status == "ok" and not calm.needs_review and calm.reason == ""
    unsure = patient_trust(np.array([0.55]), np.array([0.5]), checks[1], [], np.array([0.3]), np.array([0.8]), 0.9)
    assert unsure.status == UNCERTAIN
    assert PATIENT_STATES.index(OUT_OF_DOMAIN) < PATIENT_STATES.index(UNCERTAIN) < PATIENT_STATES.index("ok")
