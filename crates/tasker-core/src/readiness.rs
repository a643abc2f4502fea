//! Readiness: which steps of one task may run now, and whether the task is finished.
//!
//! Stores apply it **incrementally**, inside the transaction that changed a step, with
//! the task serialized (so two parents finishing together cannot both miss, or both
//! enqueue, their child):
//!
//! - each step keeps the count of its parents that are not done, and of those done
//!   with results (live: complete or resolved); when a step becomes done its
//!   children's counts move, and a pending child at zero is [`released`] — to run if
//!   a parent is live, else to be skipped (every parent was skipped), which releases
//!   its own children in turn. A completion costs its own edges, not the task's size;
//! - each task keeps its [`Progress`] counters, shifted with every step move, which
//!   give its [`Outcome`] without reading its steps.
//!
//! [`evaluate`] is the same rule over a whole task at once: the specification the
//! incremental form is property-tested against.

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
    /// Pending steps whose parents are all done, one of them live (or that have none),
    /// in position order.
    pub ready: Vec<usize>,
    /// Pending steps whose parents are all done and all skipped, in position order.
    pub skip: Vec<usize>,
    pub outcome: Outcome,
}

/// What a pending step with no parent left to finish does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// It goes on its queue.
    Run,
    /// Every parent was skipped: it is skipped too.
    Skip,
}

/// Evaluates one task from scratch. `states[i]` is the state of the step at position
/// `i`; `edges` are `(parent, child)` pairs of positions.
pub fn evaluate(states: &[StepState], edges: &[(usize, usize)]) -> Evaluation {
    let waiting_on = waiting_on(states, edges);
    let mut parents = vec![0u32; states.len()];
    let mut live = vec![0u32; states.len()];
    for &(parent, child) in edges {
        parents[child] += 1;
        live[child] += u32::from(states[parent].is_live());
    }
    let (mut ready, mut skip) = (Vec::new(), Vec::new());
    for i in 0..states.len() {
        if !released(states[i], waiting_on[i]) {
            continue;
        }
        match release(parents[i], live[i]) {
            Release::Run => ready.push(i),
            Release::Skip => skip.push(i),
        }
    }
    let outcome = if states.iter().all(|s| s.is_done()) {
        Outcome::Complete
    } else if ready.is_empty() && skip.is_empty() && !states.iter().any(|s| s.is_active()) {
        Outcome::Failed
    } else {
        Outcome::Running
    };
    Evaluation {
        ready,
        skip,
        outcome,
    }
}

/// Whether a released step with `parents` parents, `live` of them complete or
/// resolved, runs or is skipped: it runs when it has no parent or a live one.
pub fn release(parents: u32, live: u32) -> Release {
    if parents == 0 || live > 0 {
        Release::Run
    } else {
        Release::Skip
    }
}

/// For each step, how many of its parents are not done.
pub fn waiting_on(states: &[StepState], edges: &[(usize, usize)]) -> Vec<u32> {
    let mut waiting_on = vec![0u32; states.len()];
    for &(parent, child) in edges {
        if !states[parent].is_done() {
            waiting_on[child] += 1;
        }
    }
    waiting_on
}

/// Whether a step may be enqueued now: pending, with no parent left to finish.
pub fn released(state: StepState, waiting_on: u32) -> bool {
    state == StepState::Pending && waiting_on == 0
}

/// The children step `step`'s result chooses among its `decides`, or the error that
/// fails it (or refuses its resolution): `step `route` decides among ground, air: …`.
pub fn decision(
    step: &str,
    results: &serde_json::value::RawValue,
    decides: &[impl AsRef<str>],
) -> Result<Vec<String>, String> {
    chosen(results, decides).map_err(|why| {
        let names: Vec<&str> = decides.iter().map(AsRef::as_ref).collect();
        format!("step `{step}` decides among {}: {why}", names.join(", "))
    })
}

/// The children a deciding step's result chooses: its `next`, an array of names among
/// `decides`. Anything else is an error saying what is wrong with it.
fn chosen(
    results: &serde_json::value::RawValue,
    decides: &[impl AsRef<str>],
) -> Result<Vec<String>, String> {
    let result: serde_json::Value =
        serde_json::from_str(results.get()).map_err(|e| e.to_string())?;
    let next = result
        .get("next")
        .ok_or("its result has no `next` (the names of the steps to run)")?;
    let names = next
        .as_array()
        .ok_or_else(|| format!("`next` must be an array of step names, not {next}"))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| format!("`next` must list step names, not {name}"))?;
        if !decides.iter().any(|d| d.as_ref() == name) {
            return Err(format!("`next` names `{name}`, which it does not decide"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// A task's counters, kept in its row: they change with each step move
/// ([`Progress::shift`]) and tell the task's outcome without a scan of its steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Steps not done (neither complete, resolved nor skipped).
    pub left: u32,
    /// Steps enqueued, in progress or waiting to retry.
    pub active: u32,
}

impl Progress {
    /// The counters of a task whose steps are in `states`.
    pub fn of(states: &[StepState]) -> Self {
        let mut p = Progress::default();
        for s in states {
            p.left += u32::from(!s.is_done());
            p.active += u32::from(s.is_active());
        }
        p
    }

    /// Accounts for `n` new steps in `state` (the instances of a `for_each` step).
    pub fn add(&mut self, state: StepState, n: u32) {
        self.left += n * u32::from(!state.is_done());
        self.active += n * u32::from(state.is_active());
    }

    /// Accounts for one step moving from `from` to `to`.
    pub fn shift(&mut self, from: StepState, to: StepState) {
        let count = |was: bool, is: bool, n: &mut u32| match (was, is) {
            (false, true) => *n += 1,
            (true, false) => *n = n.saturating_sub(1),
            _ => {}
        };
        count(!from.is_done(), !to.is_done(), &mut self.left);
        count(from.is_active(), to.is_active(), &mut self.active);
    }

    /// The task's outcome once the steps released by the same change are enqueued.
    pub fn outcome(self) -> Outcome {
        if self.left == 0 {
            Outcome::Complete
        } else if self.active == 0 {
            Outcome::Failed
        } else {
            Outcome::Running
        }
    }
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
    use crate::state::StepEvent;
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

    #[test]
    fn a_skipped_branch_rejoins_and_a_dead_end_is_skipped() {
        // a decides b or c; both lead to d; only c leads to e.
        let edges = [(0, 1), (0, 2), (1, 3), (2, 3), (2, 4)];
        let mut inc = Incremental::new(5, &edges);
        inc.apply(0, StepEvent::Enqueue);
        inc.apply(0, StepEvent::Start);
        // a chooses b: c is skipped, and e, whose only parent is c, with it.
        let skipped_c = inc.apply(2, StepEvent::Skip);
        assert!(skipped_c.is_empty());
        assert_eq!(inc.states[4], Skipped, "a dead end is skipped");
        assert_eq!(inc.apply(0, StepEvent::Succeed), [1]);
        let states = [Complete, Pending, Skipped, Pending, Skipped];
        assert_eq!(evaluate(&states, &edges).ready, [1]);
        // d waits for b, and runs after it although its other parent was skipped.
        let states = [Complete, Complete, Skipped, Pending, Skipped];
        let e = evaluate(&states, &edges);
        assert_eq!((e.ready, e.skip), (vec![3], vec![]));
        let e = evaluate(&[Complete, Complete, Skipped, Complete, Skipped], &edges);
        assert_eq!(e.outcome, Outcome::Complete, "skipped steps count as done");
        let e = evaluate(&[Complete, Complete, Skipped, Complete, Pending], &edges);
        assert_eq!(e.skip, [4], "every parent skipped");
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

    /// The incremental rule as a store applies it, on a task held in memory.
    struct Incremental {
        states: Vec<StepState>,
        waiting_on: Vec<u32>,
        /// Parents complete or resolved.
        live: Vec<u32>,
        parents: Vec<u32>,
        children: Vec<Vec<usize>>,
        progress: Progress,
    }

    impl Incremental {
        fn new(n: usize, edges: &[(usize, usize)]) -> Self {
            let mut children = vec![Vec::new(); n];
            let mut waiting_on = vec![0; n];
            for &(p, c) in edges {
                children[p].push(c);
                waiting_on[c] += 1;
            }
            Incremental {
                states: vec![Pending; n],
                parents: waiting_on.clone(),
                waiting_on,
                live: vec![0; n],
                children,
                progress: Progress {
                    left: n as u32,
                    active: 0,
                },
            }
        }

        /// Applies `event` to step `i`; returns the children it released to run, having
        /// skipped those whose parents were all skipped (and theirs, in turn).
        fn apply(&mut self, i: usize, event: StepEvent) -> Vec<usize> {
            let from = self.states[i];
            let to = from.apply(event).unwrap();
            self.states[i] = to;
            self.progress.shift(from, to);
            let mut out = Vec::new();
            if !from.is_done() && to.is_done() {
                for c in self.children[i].clone() {
                    self.waiting_on[c] -= 1;
                    self.live[c] += u32::from(to.is_live());
                    if released(self.states[c], self.waiting_on[c]) {
                        match release(self.parents[c], self.live[c]) {
                            Release::Run => out.push(c),
                            Release::Skip => out.extend(self.apply(c, StepEvent::Skip)),
                        }
                    }
                }
            }
            out.sort_unstable();
            out
        }

        /// A decision: step `i` succeeds, having chosen all its pending children but
        /// the first, which is skipped (and so, in turn, what only it leads to).
        fn decide(&mut self, i: usize) -> Vec<usize> {
            let away = self.children[i]
                .iter()
                .copied()
                .find(|&c| self.states[c] == Pending);
            let mut out = match away {
                Some(c) => self.apply(c, StepEvent::Skip),
                None => Vec::new(),
            };
            out.extend(self.apply(i, StepEvent::Succeed));
            out.sort_unstable();
            out.dedup();
            out
        }

        /// Every event that may happen now, by step; `None` is a decision.
        fn possible(&self, task_failed: bool) -> Vec<(usize, Option<StepEvent>)> {
            use StepEvent as E;
            let mut out = Vec::new();
            for (i, s) in self.states.iter().enumerate() {
                let events: &[Option<StepEvent>] = match s {
                    Enqueued => &[Some(E::Start), Some(E::DeadLetter)],
                    InProgress => &[
                        Some(E::Succeed),
                        None,
                        Some(E::FailRetryable),
                        Some(E::FailPermanent),
                        Some(E::Reclaim),
                    ],
                    WaitingForRetry => &[Some(E::RetryDue)],
                    // An operator resolves a failed step at any time, retries only a failed task.
                    Error if task_failed => &[Some(E::Resolve), Some(E::Retry)],
                    Error => &[Some(E::Resolve)],
                    _ => &[],
                };
                out.extend(events.iter().map(|&e| (i, e)));
            }
            out
        }
    }

    /// Checks the incremental state against a full evaluation, enqueues what was
    /// released, and returns the outcome.
    fn check_and_enqueue(
        inc: &mut Incremental,
        edges: &[(usize, usize)],
        released: Vec<usize>,
    ) -> Result<Outcome, TestCaseError> {
        let full = evaluate(&inc.states, edges);
        prop_assert_eq!(
            &released,
            &full.ready,
            "released = ready by full evaluation"
        );
        prop_assert!(
            full.skip.is_empty(),
            "every skip was propagated: {:?}",
            full.skip
        );
        prop_assert_eq!(&inc.waiting_on, &waiting_on(&inc.states, edges));
        for r in released {
            prop_assert!(inc.apply(r, StepEvent::Enqueue).is_empty());
        }
        prop_assert_eq!(inc.progress, Progress::of(&inc.states));
        let outcome = inc.progress.outcome();
        prop_assert_eq!(outcome, evaluate(&inc.states, edges).outcome);
        Ok(outcome)
    }

    proptest! {
        #[test]
        fn incremental_readiness_equals_full_evaluation(
            (n, edges) in dags(),
            picks in prop::collection::vec(0usize..1000, 1..120),
            cancel_at in prop::option::of(0usize..120),
        ) {
            let mut inc = Incremental::new(n, &edges);
            let roots: Vec<usize> = (0..n).filter(|&i| released(inc.states[i], inc.waiting_on[i])).collect();
            let mut outcome = check_and_enqueue(&mut inc, &edges, roots)?;
            for (round, pick) in picks.iter().enumerate() {
                if cancel_at == Some(round) {
                    for i in 0..n {
                        if inc.states[i].apply(StepEvent::Cancel).is_ok() {
                            prop_assert!(inc.apply(i, StepEvent::Cancel).is_empty());
                        }
                    }
                    check_and_enqueue(&mut inc, &edges, Vec::new())?;
                    break;
                }
                let possible = inc.possible(outcome == Outcome::Failed);
                if possible.is_empty() {
                    break;
                }
                let released = match possible[pick % possible.len()] {
                    (i, Some(event)) => inc.apply(i, event),
                    (i, None) => inc.decide(i),
                };
                outcome = check_and_enqueue(&mut inc, &edges, released)?;
            }
        }

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
