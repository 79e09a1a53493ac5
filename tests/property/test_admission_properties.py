"""The admission limit under any run of arrivals, departures and lag samples: it stays
within its range, a call is refused only while at least the limit's floor is in flight,
and an admitted call is never counted twice nor lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import Admission, AdmissionConfig

CONFIG = AdmissionConfig(target_delay_s=0.005, interval_s=0.1, min_limit=2, max_limit=50)

Step = tuple[str, float]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.just(0.0)),
        st.tuples(st.just("leave"), st.just(0.0)),
        st.tuples(st.just("lag"), st.floats(min_value=0.0, max_value=0.5)),
    ),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_the_limit_stays_in_range_and_counts_calls_exactly(steps: list[Step]) -> None:
    admission = Admission(CONFIG)
    held, now_s = 0, 0.0
    for kind, lag_s in steps:
        if kind == "arrive":
            before = admission.in_flight
            if admission.admit():
                held += 1
            else:  # refused only at the limit, and the limit keeps its floor
                assert before >= int(admission.limit) >= CONFIG.min_limit
        elif kind == "leave" and held:
            admission.release()
            held -= 1
        else:
            now_s += 0.013
            admission.observe_lag(lag_s, now_s)
        assert CONFIG.min_limit <= admission.limit <= CONFIG.max_limit
        assert admission.in_flight == held
