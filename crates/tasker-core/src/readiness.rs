//! Readiness: which steps of one task may run now, and whether the task is finished.
//! A pure function of that task's step states and edges, evaluated whenever something
//! happens to the task (never a scan of all open tasks). Stores call it inside the
//! transaction that changed a step, with the task serialized, so two parents finishing
//! together cannot both miss, or both enqueue, their child.

use crate::state::StepState;

/// Where a task stands after an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Some step is queued, running, waiting to retry, or ready.
    Running,
    /// Every step is complete or resolved.
    Complete,
    /// Nothing can progress and a step failed for good.
    Failed,
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// Pending steps whose parents are all done, in position order.
    pub ready: Vec<usize>,
    pub outcome: Outcome,
}

/// Evaluates one task. `states[i]` is the state of the step at position `i`;
/// `edges` are `(parent, child)` pairs of positions.
pub fn evaluate(states: &[StepState], edges: &[(usize, usize)]) -> Evaluation {
    let mut waiting_on = vec![0u32; states.len()];
    for &(parent, child) in edges {
        if !states[parent].is_done() {
            waiting_on[child] += 1;
        }
    }
    let ready: Vec<usize> = (0..states.len())
        .filter(|&i| states[i] == StepState::Pending && waiting_on[i] == 0)
        .collect();
    let outcome = if states.iter().all(|s| s.is_done()) {
        Outcome::Complete
    } else if ready.is_empty() && !states.iter().any(|s| s.is_active()) {
        Outcome::Failed
    } else {
        Outcome::Running
    };
    Evaluation { ready, outcome }
}

/// Pending steps that can never run because an ancestor failed or was cancelled.
pub fn blocked(states: &[StepState], edges: &[(usize, usize)]) -> Vec<usize> {
    let mut dead: Vec<bool> = states
        .iter()
        .map(|s| matches!(s, StepState::Error | StepState::Cancelled))
        .collect();
    // Propagate along edges until nothing changes; DAGs are small, this stays cheap.
    let mut changed = true;
    while changed {
        changed = false;
        for &(parent, child) in edges {
            if dead[parent] && !dead[child] && states[child] == StepState::Pending {
                dead[child] = true;
                changed = true;
            }
        }
    }
    (0..states.len())
        .filter(|&i| dead[i] && states[i] == StepState::Pending)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepState::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn diamond() {
        let edges = [(0, 1), (0, 2), (1, 3), (2, 3)];
        let e = evaluate(&[Pending; 4], &edges);
        assert_eq!(e.ready, [0]);
        let e = evaluate(&[Complete, Complete, InProgress, Pending], &edges);
        assert_eq!((e.ready.len(), e.outcome), (0, Outcome::Running));
        let e = evaluate(&[Complete, Complete, ResolvedManually, Pending], &edges);
        assert_eq!(e.ready, [3]);
        let e = evaluate(&[Complete; 4], &edges);
        assert_eq!(e.outcome, Outcome::Complete);
        let states = [Complete, Error, Complete, Pending];
        assert_eq!(evaluate(&states, &edges).outcome, Outcome::Failed);
        assert_eq!(blocked(&states, &edges), [3]);
        let states = [Complete, Error, WaitingForRetry, Pending];
        assert_eq!(evaluate(&states, &edges).outcome, Outcome::Running);
    }

    /// Random DAGs: edges only go from a lower to a higher position.
    fn dags() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
        (1usize..14).prop_flat_map(|n| {
            let pairs: Vec<(usize, usize)> =
                (0..n).flat_map(|c| (0..c).map(move |p| (p, c))).collect();
            let len = pairs.len();
            (
                Just(n),
                proptest::sample::subsequence(pairs, 0..=len.min(30)),
            )
        })
    }

    /// Runs a task to its end, picking among ready and running steps with `picks`;
    /// `failing` fails permanently when it runs. Returns the order steps finished in.
    fn simulate(
        n: usize,
        edges: &[(usize, usize)],
        failing: Option<usize>,
        picks: &[usize],
    ) -> (Vec<StepState>, Vec<usize>, Outcome) {
        let mut states = vec![Pending; n];
        let mut finished = Vec::new();
        let mut pick = picks.iter().cycle();
        loop {
            let eval = evaluate(&states, edges);
            for &r in &eval.ready {
                states[r] = states[r].apply(crate::state::StepEvent::Enqueue).unwrap();
            }
            let running: Vec<usize> = (0..n).filter(|&i| states[i] == Enqueued).collect();
            if running.is_empty() {
                return (states, finished, eval.outcome);
            }
            let i = running[pick.next().copied().unwrap_or(0) % running.len()];
            for &(p, c) in edges {
                if c == i {
                    assert!(states[p].is_done(), "step {i} ran before parent {p}");
                }
            }
            states[i] = Enqueued.apply(crate::state::StepEvent::Start).unwrap();
            let event = if Some(i) == failing {
                crate::state::StepEvent::FailPermanent
            } else {
                crate::state::StepEvent::Succeed
            };
            states[i] = states[i].apply(event).unwrap();
            finished.push(i);
        }
    }

    fn descendants(of: usize, edges: &[(usize, usize)]) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut stack = vec![of];
        while let Some(s) = stack.pop() {
            for &(p, c) in edges {
                if p == s && out.insert(c) {
                    stack.push(c);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn happy_path_runs_every_step_once((n, edges) in dags(), picks in prop::collection::vec(0usize..64, 1..32)) {
            let (states, finished, outcome) = simulate(n, &edges, None, &picks);
            prop_assert_eq!(outcome, Outcome::Complete);
            prop_assert!(states.iter().all(|s| *s == Complete));
            let mut sorted = finished.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "each step finishes exactly once");
        }

        #[test]
        fn a_failed_step_blocks_exactly_its_descendants((n, edges) in dags(), f in 0usize..64, picks in prop::collection::vec(0usize..64, 1..32)) {
            let failing = f % n;
            let (states, finished, outcome) = simulate(n, &edges, Some(failing), &picks);
            let desc = descendants(failing, &edges);
            prop_assert_eq!(outcome, Outcome::Failed);
            let never_ran: BTreeSet<usize> = (0..n).filter(|i| !finished.contains(i)).collect();
            prop_assert_eq!(&never_ran, &desc);
            let blocked: BTreeSet<usize> = blocked(&states, &edges).into_iter().collect();
            prop_assert_eq!(&blocked, &desc);
            for (i, state) in states.iter().enumerate() {
                if i != failing && !desc.contains(&i) {
                    prop_assert_eq!(*state, Complete);
                }
            }
        }
    }
}
