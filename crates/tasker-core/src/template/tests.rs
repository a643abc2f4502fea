use super::*;
use crate::backoff::Backoff;

const DIAMOND: &str = "\
namespace: demo
name: diamond
version: 1.0.0
description: A fans out to B and C, which join in D.
retry:
  max_attempts: 5
  backoff:
    initial: 250ms
timeout: 10s
steps:
  - name: a
    handler: sum
  - name: b
    handler: sum
    depends_on: [a]
    queue: fast_lane
  - name: c
    handler: sum
    depends_on: [a]
    retry:
      max_attempts: 2
    timeout: 2s
  - name: d
    handler: sum
    depends_on: [b, c]
    config:
      value: 10
";

fn errors(source: &str) -> Vec<String> {
    parse_template(source, "t.yaml")
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn with_steps(steps: &str) -> String {
    format!("namespace: demo\nname: t\nversion: 1.0.0\nsteps:\n{steps}")
}

#[test]
fn parses_and_resolves_defaults() {
    let t = parse_template(DIAMOND, "diamond.yaml").unwrap();
    assert_eq!(t.key().to_string(), "demo/diamond@1.0.0");
    assert_eq!(t.steps.len(), 4);
    let (a, b, c, d) = (&t.steps[0], &t.steps[1], &t.steps[2], &t.steps[3]);
    assert_eq!(a.queue, "demo");
    assert_eq!(b.queue, "fast_lane");
    assert_eq!(a.retry.max_attempts, 5);
    assert_eq!(a.retry.backoff.initial, Duration::from_millis(250));
    assert_eq!(a.retry.backoff.max, Backoff::default().max);
    assert_eq!(c.retry.max_attempts, 2);
    assert_eq!(
        c.retry.backoff.initial,
        Duration::from_millis(250),
        "step inherits template backoff"
    );
    assert_eq!(a.timeout, Duration::from_secs(10));
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(d.config, serde_json::json!({"value": 10}));
    assert_eq!(a.config, serde_json::json!({}));
    assert_eq!(t.edges(), [(0, 1), (0, 2), (1, 3), (2, 3)]);
}

#[test]
fn canonical_json_ignores_formatting() {
    let a = parse_template(DIAMOND, "a.yaml").unwrap();
    let reformatted = DIAMOND.replace(
        "depends_on: [b, c]",
        "depends_on:\n      - b\n      - c  # join",
    );
    let b = parse_template(&reformatted, "b.yaml").unwrap();
    assert_eq!(a.canonical_json(), b.canonical_json());
    let changed = parse_template(&DIAMOND.replace("value: 10", "value: 11"), "c.yaml").unwrap();
    assert_ne!(a.canonical_json(), changed.canonical_json());
}

#[test]
fn reports_a_cycle_with_its_path() {
    let e = errors(&with_steps(
        "  - name: a\n    handler: noop\n    depends_on: [c]\n  - name: b\n    handler: noop\n    depends_on: [a]\n  - name: c\n    handler: noop\n    depends_on: [b]\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:5:5: step `a`: dependency cycle: a -> c -> b -> a (each step depends on the next)"
        ]
    );
}

#[test]
fn a_step_decides_only_among_its_own_children() {
    let e = errors(&with_steps(
        "  - {name: a, handler: echo, decides: [b, c, b, z]}\n  - {name: b, handler: noop, depends_on: [a]}\n  - {name: c, handler: noop}\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:5:6: step `a`: decides `c`, which is not a step that depends on it",
            "t.yaml:5:6: step `a`: lists `b` twice in decides",
            "t.yaml:5:6: step `a`: decides `z`, which is not a step that depends on it",
        ]
    );
    let t = parse_template(
        &with_steps(
            "  - {name: a, handler: echo, decides: [b]}\n  - {name: b, handler: noop, depends_on: [a]}\n",
        ),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(t.steps[0].decides, ["b"]);
    assert!(
        !parse_template(&with_steps("  - {name: a, handler: noop}\n"), "t.yaml")
            .unwrap()
            .canonical_json()
            .contains("decides"),
        "a template without decisions keeps its canonical form"
    );
}

#[test]
fn reports_unknown_self_and_duplicate() {
    let e = errors(&with_steps(
        "  - name: a\n    handler: noop\n    depends_on: [a, ghost]\n  - name: b\n    handler: noop\n  - name: b\n    handler: noop\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:5:5: step `a`: depends on itself",
            "t.yaml:5:5: step `a`: depends on unknown step `ghost`",
            "t.yaml:10:5: step `b`: duplicate step name: another step has the same name",
        ]
    );
}

#[test]
fn reports_no_steps_and_bad_version() {
    let e = errors("namespace: demo\nname: t\nversion: one\nsteps: []\n");
    assert_eq!(e.len(), 2);
    assert!(
        e[0].starts_with("t.yaml:3:1: version `one` is not a semantic version"),
        "{e:?}"
    );
    assert_eq!(e[1], "t.yaml:4:1: the template has no steps");
}

#[test]
fn reports_bad_retry_values() {
    let e = errors(&with_steps(
        "  - name: a\n    handler: noop\n    retry:\n      max_attempts: 0\n  - name: b\n    handler: noop\n    retry:\n      backoff: {jitter: 1.5}\n  - name: c\n    handler: noop\n    retry:\n      backoff: {initial: 10m, max: 1s}\n  - name: d\n    handler: noop\n    retry:\n      backoff: {multiplier: 0.5}\n",
    ));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].contains("step `a`: retry: max_attempts must be between 1 and 1000"));
    assert!(e[1].contains("step `b`: retry: backoff.jitter must be between 0 and 1, got 1.5"));
    assert!(
        e[2].contains("step `c`: retry: backoff.initial (10m) is longer than backoff.max (1s)")
    );
    assert!(e[3].contains("step `d`: retry: backoff.multiplier must be between 1 and 100"));
}

#[test]
fn reports_unknown_fields_with_position() {
    let e = errors(&with_steps(
        "  - name: a\n    handler: noop\n    dependz_on: [b]\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("t.yaml:7:5: steps[0]: unknown field `dependz_on`"),
        "{e:?}"
    );
}

#[test]
fn refuses_a_sequence_where_a_mapping_belongs() {
    // Serde reads a struct from a sequence of its fields in order; a template may not.
    for steps in [
        "  - [a, noop]\n",
        "  - name: a\n    handler: noop\n    retry: [3, true]\n",
        "  - name: a\n    handler: noop\n    retry:\n      backoff: [1s]\n",
    ] {
        let e = errors(&with_steps(steps));
        assert_eq!(e.len(), 1, "{steps}: {e:?}");
        assert!(e[0].contains("expected a mapping"), "{steps}: {e:?}");
    }
    for json in [
        r#"["demo", "t", "1.0.0"]"#,
        r#"{"namespace": "demo", "name": "t", "version": "1.0.0", "retry": [null, null],
            "steps": [{"name": "a", "handler": "noop"}]}"#,
    ] {
        let e = parse_json_template(json, "t.json").unwrap_err().to_string();
        assert!(e.contains("expected a mapping"), "{json}: {e}");
    }
}

#[test]
fn refuses_other_values_where_text_belongs() {
    for source in [
        "namespace: demo\nname: null\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n",
        "namespace: demo\nname: false\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop}\n",
        &with_steps("  - {name: 12, handler: noop}\n"),
        "namespace: demo\nname: t\nversion: 1.0.0\ndescription: ~\nsteps:\n  - {name: a, handler: noop}\n",
        &with_steps("  - {name: a, handler: null}\n"),
    ] {
        let e = errors(source);
        assert_eq!(e.len(), 1, "{source}: {e:?}");
        assert!(e[0].contains("expected a string"), "{source}: {e:?}");
    }
}

#[test]
fn reports_bad_durations_with_position() {
    let e = errors(&with_steps(
        "  - name: a\n    handler: noop\n    timeout: 5 minutes\n",
    ));
    assert!(e[0].starts_with("t.yaml:5:5: steps[0]: "), "{e:?}");
    assert!(e[0].contains("invalid duration `5 minutes`"), "{e:?}");
}

#[test]
fn reports_unsafe_names() {
    let e = errors(
        "namespace: Bad-NS\nname: t\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: \"x; rm -rf\"\n    queue: \"q'\"\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("t.yaml:1:1: namespace `Bad-NS` is not allowed"));
    assert!(e[1].contains("step `a`: handler `x; rm -rf` is not allowed"));
    assert!(e[2].contains("step `a`: queue `q'` is not allowed"));
    let long = format!(
        "namespace: {}\nname: t\nversion: 1.0.0\nsteps:\n  - {{name: a, handler: noop}}\n",
        "n".repeat(41)
    );
    assert!(errors(&long)[0].contains("is longer than 40 characters"));
}

#[test]
fn reports_yaml_syntax_errors() {
    let e = errors("namespace: demo\nname: [unclosed\n");
    assert!(e[0].starts_with("t.yaml:"), "{e:?}");
}

#[test]
fn checks_context_against_schema() {
    let src = format!(
        "{}context_schema:\n  type: object\n  required: [order_id]\n  properties:\n    order_id: {{type: integer}}\n",
        with_steps("  - name: a\n    handler: noop\n")
    );
    let t = parse_template(&src, "t.yaml").unwrap();
    t.check_context(&serde_json::json!({"order_id": 7}))
        .unwrap();
    let e = t
        .check_context(&serde_json::json!({"order_id": "x"}))
        .unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].starts_with("at /order_id:"), "{e}");
    let e = t.check_context(&serde_json::json!({})).unwrap_err();
    assert!(e.to_string().contains("order_id"), "{e}");
}

#[test]
fn rejects_an_invalid_schema() {
    let src = format!(
        "{}context_schema:\n  type: 12\n",
        with_steps("  - {name: a, handler: noop}\n")
    );
    let e = errors(&src);
    assert!(
        e[0].contains("context_schema is not a valid JSON Schema"),
        "{e:?}"
    );
}

#[test]
fn loads_a_directory_and_reports_every_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), DIAMOND).unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        DIAMOND.replace("name: diamond", "name: other"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let all = load_path(dir.path()).unwrap();
    assert_eq!(
        all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["diamond", "other"]
    );

    std::fs::write(dir.path().join("c.yaml"), DIAMOND).unwrap();
    std::fs::write(dir.path().join("d.yaml"), "namespace: demo\n").unwrap();
    let e = load_path(dir.path()).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(
        e.0[0]
            .to_string()
            .contains("c.yaml: template demo/diamond@1.0.0 is defined twice")
    );
    assert!(e.0[1].to_string().contains("d.yaml"));
    assert!(e.0[1].message.contains("missing field"), "{e}");

    let missing = load_path(&dir.path().join("nope.yaml")).unwrap_err();
    assert!(missing.to_string().contains("cannot read"));
}

/// Found by fuzzing: the stores keep the canonical JSON and read it back with the YAML
/// parser, which refuses DEL, the C1 controls and U+FFFE/U+FFFF written raw, and reads
/// a raw U+0085 (NEL) as a line break.
#[test]
fn canonical_json_reads_back_as_the_same_template() {
    for text in [
        "x\\x7fy",
        "x\\x80y",
        "x\\x85y",
        "x\\x9fy",
        "x\\ufffey",
        "x\\uffffy",
    ] {
        let yaml = format!(
            "namespace: a\nname: b\nversion: 1.0.0\ndescription: \"{text}\"\nsteps:\n  \
             - name: s\n    handler: noop\n    config: {{\"k{text}\": \"\\t\\0{text}\"}}\n"
        );
        let canonical = parse_template(&yaml, "t.yaml").unwrap().canonical_json();
        let again = parse_template(&canonical, "stored")
            .unwrap_or_else(|e| panic!("{canonical} does not parse: {e}"));
        assert_eq!(again.canonical_json(), canonical);
    }
}

#[test]
fn a_step_waits_for_a_signal_with_no_handler_of_its_own() {
    let yaml = with_steps(
        "  - {name: a, handler: noop}\n  - {name: approve, depends_on: [a], wait_for: {signal: approval, timeout: 72h}}\n",
    );
    let t = parse_template(&yaml, "t.yaml").unwrap();
    let wait = t.steps[1].wait_for.as_ref().expect("a wait");
    assert_eq!(
        (wait.signal.as_str(), wait.timeout),
        ("approval", Duration::from_secs(72 * 3600))
    );
    assert_eq!(
        t.steps[1].timeout, wait.timeout,
        "stored as the step's timeout"
    );
    assert_eq!(t.steps[1].retry.max_attempts, 1, "a wait is one attempt");
    assert!(t.steps[0].wait_for.is_none());
    let canonical = t.canonical_json();
    assert!(
        canonical.contains(
            r#"{"name":"approve","depends_on":["a"],"wait_for":{"signal":"approval","timeout":"3d"}}"#
        ),
        "only what applies to a wait: {canonical}"
    );
    let again = parse_template(&canonical, "stored").unwrap();
    assert_eq!(again.steps, t.steps, "the canonical form reads back");
}

#[test]
fn a_wait_names_its_signal_and_timeout_and_nothing_of_a_handler() {
    let e = errors(&with_steps(
        "  - {name: a, handler: noop, wait_for: {signal: go, timeout: 1h}}\n  \
         - {name: b}\n  \
         - {name: c, wait_for: {signal: go}}\n  \
         - {name: d, wait_for: {signal: 'no good', timeout: 0s}}\n  \
         - {name: e, wait_for: {signal: go, timeout: 1h}, retry: {max_attempts: 2}, timeout: 1s, queue: q, config: {}}\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:5:6: step `a`: has both a handler and wait_for: a step that waits for a signal runs no handler",
            "t.yaml:6:6: step `b`: has no handler (or `wait_for` to wait for a signal)",
            "t.yaml:7:6: step `c`: wait_for needs a timeout: how long to wait for the signal, e.g. `timeout: 72h`",
            "t.yaml:8:6: step `d`: wait_for signal `no good` is not allowed: use letters, digits, `_` and `-`, starting with a letter or digit",
            "t.yaml:8:6: step `d`: wait_for timeout must be longer than 0ms",
            "t.yaml:9:6: step `e`: `queue` does not apply to a step that waits for a signal (wait_for)",
            "t.yaml:9:6: step `e`: `config` does not apply to a step that waits for a signal (wait_for)",
            "t.yaml:9:6: step `e`: `retry` does not apply to a step that waits for a signal (wait_for)",
            "t.yaml:9:6: step `e`: `timeout` does not apply to a step that waits for a signal (wait_for)",
        ]
    );
}

#[test]
fn a_step_fans_out_over_the_context_or_a_parents_result() {
    let yaml = with_steps(
        "  - {name: list, handler: noop}\n  \
         - {name: lines, handler: noop, for_each: list.order.lines, depends_on: [list]}\n  \
         - {name: amounts, handler: sum, for_each: context.amounts, max_items: 50}\n",
    );
    let t = parse_template(&yaml, "t.yaml").unwrap();
    let lines = t.steps[1].for_each.as_ref().expect("a fan-out");
    assert_eq!(lines.max_items, DEFAULT_MAX_ITEMS);
    assert_eq!(lines.split(), (Some("list"), vec!["order", "lines"]));
    let amounts = t.steps[2].for_each.as_ref().expect("a fan-out");
    assert_eq!(
        (amounts.max_items, amounts.split()),
        (50, (None, vec!["amounts"]))
    );
    let canonical = t.canonical_json();
    assert!(
        canonical.contains(r#""for_each":"context.amounts","max_items":50"#),
        "{canonical}"
    );
    assert_eq!(parse_template(&canonical, "stored").unwrap().steps, t.steps);
}

#[test]
fn a_fan_out_reads_from_the_context_or_a_parent_and_is_bounded() {
    let e = errors(&with_steps(
        "  - {name: a, handler: noop}\n  \
         - {name: b, handler: noop, for_each: a.items}\n  \
         - {name: c, handler: noop, for_each: 'context..x', depends_on: [a]}\n  \
         - {name: d, handler: noop, for_each: context.x, max_items: 0, decides: [e]}\n  \
         - {name: e, handler: noop, max_items: 5, depends_on: [d]}\n  \
         - {name: f, for_each: context.x, wait_for: {signal: go, timeout: 1h}}\n  \
         - {name: g, handler: noop, for_each: context.x, max_items: 200000}\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:6:6: step `b`: for_each `a.items`: the source must be `context.<path>` or a parent's result, `<parent>.<path>` (it has no parents)",
            "t.yaml:7:6: step `c`: for_each `context..x`: the path has an empty key",
            "t.yaml:8:6: step `d`: max_items must be at least 1",
            "t.yaml:8:6: step `d`: a for_each step cannot decide: let a step after it decide from its results",
            "t.yaml:9:6: step `e`: `max_items` applies only to a for_each step",
            "t.yaml:10:6: step `f`: a for_each step cannot wait for a signal",
            "t.yaml:11:6: step `g`: max_items 200000 is more than the limit of 100000",
        ]
    );
}

#[test]
fn a_concurrency_key_is_read_from_the_context_as_text() {
    let yaml = "namespace: demo\nname: t\nversion: 1.0.0\n\
                concurrency: {key: context.customer.id, limit: 2}\n\
                steps:\n  - {name: a, handler: noop}\n";
    let t = parse_template(yaml, "t.yaml").unwrap();
    assert_eq!(
        t.concurrency,
        Some(Concurrency {
            key: "context.customer.id".into(),
            limit: 2
        })
    );
    let value = |context: &str| {
        let raw = RawValue::from_string(context.to_owned()).unwrap();
        t.concurrency_value(&raw)
    };
    assert_eq!(
        value(r#"{"customer": {"id": "ada"}}"#).unwrap().as_deref(),
        Some("ada")
    );
    assert_eq!(
        value(r#"{"customer": {"id": 42}}"#).unwrap().as_deref(),
        Some("42")
    );
    assert_eq!(
        value(r#"{"customer": {}}"#).unwrap_err().problems,
        ["concurrency key `context.customer.id` names nothing: no `id` in an object"]
    );
    let long = format!(r#"{{"customer": {{"id": "{}"}}}}"#, "x".repeat(300));
    assert_eq!(
        value(&long).unwrap_err().problems,
        ["concurrency key `context.customer.id` is 300 bytes long: at most 255"]
    );
    assert_eq!(
        value(r#"{"customer": {"id": null}}"#).unwrap_err().problems,
        [
            "concurrency key `context.customer.id` is null: it must be a string, a number or a boolean"
        ]
    );
    let canonical = t.canonical_json();
    assert!(
        canonical.contains(r#""concurrency":{"key":"context.customer.id","limit":2}"#),
        "{canonical}"
    );
    assert_eq!(
        parse_template(&canonical, "stored").unwrap().concurrency,
        t.concurrency
    );
    let plain = parse_template(&with_steps("  - {name: a, handler: noop}\n"), "t.yaml").unwrap();
    assert!(!plain.canonical_json().contains("concurrency"));
    assert_eq!(
        plain
            .concurrency_value(&RawValue::from_string("{}".into()).unwrap())
            .unwrap(),
        None
    );
}

#[test]
fn a_concurrency_key_is_a_context_path_with_a_limit() {
    let bad = |c: &str| {
        errors(&format!(
            "namespace: demo\nname: t\nversion: 1.0.0\nconcurrency: {c}\nsteps:\n  - {{name: a, handler: noop}}\n"
        ))
    };
    assert_eq!(
        bad("{key: customer_id, limit: 1}"),
        [
            "t.yaml:4:1: concurrency key `customer_id` must be a path into the task's context, `context.<path>` (e.g. `context.customer_id`)"
        ]
    );
    assert_eq!(
        bad("{key: 'context..id', limit: 1}"),
        ["t.yaml:4:1: concurrency key `context..id`: the path has an empty key"]
    );
    assert_eq!(
        bad("{key: context.id}"),
        [
            "t.yaml:4:1: concurrency needs a limit: how many tasks of one key may run at once, e.g. `limit: 1`"
        ]
    );
    assert_eq!(
        bad("{key: context.id, limit: 0}"),
        ["t.yaml:4:1: concurrency limit must be between 1 and 10000, got 0"]
    );
    let unknown = bad("{key: context.id, limit: 1, per: 3}");
    assert!(unknown[0].contains("unknown field `per`"), "{unknown:?}");
}

#[test]
fn a_rate_limit_names_a_key_a_rate_and_a_burst() {
    let t = parse_template(
        &with_steps(
            "  - {name: a, handler: noop, rate_limit: {key: partner_api, per_second: 2.5}}\n  \
             - {name: b, handler: noop, rate_limit: {key: partner_api, per_second: 10, burst: 1}}\n",
        ),
        "t.yaml",
    )
    .unwrap();
    let a = t.steps[0].rate_limit.as_ref().expect("a limit");
    assert_eq!(
        (a.key.as_str(), a.per_second, a.burst),
        ("partner_api", 2.5, 3),
        "the burst is the rate, rounded up, by default"
    );
    assert_eq!(t.steps[1].rate_limit.as_ref().unwrap().burst, 1);
    let canonical = t.canonical_json();
    assert!(
        canonical.contains(r#""rate_limit":{"key":"partner_api","per_second":2.5,"burst":3}"#),
        "{canonical}"
    );
    assert_eq!(parse_template(&canonical, "stored").unwrap().steps, t.steps);
    let plain = parse_template(&with_steps("  - {name: a, handler: noop}\n"), "t.yaml").unwrap();
    assert!(!plain.canonical_json().contains("rate_limit"));

    let e = errors(&with_steps(
        "  - {name: a, handler: noop, rate_limit: {key: 'bad key', per_second: 1}}\n  \
         - {name: b, handler: noop, rate_limit: {key: k}}\n  \
         - {name: c, handler: noop, rate_limit: {key: k, per_second: 0, burst: 0}}\n  \
         - {name: d, wait_for: {signal: go, timeout: 1h}, rate_limit: {key: k, per_second: 1}}\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:5:6: step `a`: rate_limit key `bad key` is not allowed: use letters, digits, `_` and `-`, starting with a letter or digit",
            "t.yaml:6:6: step `b`: rate_limit needs per_second: how many starts a second, e.g. `per_second: 10`",
            "t.yaml:7:6: step `c`: rate_limit per_second must be between 0.0001 (one start in about 3 hours) and 1000000, got 0",
            "t.yaml:7:6: step `c`: rate_limit burst must be between 1 and 1000000, got 0",
            "t.yaml:8:6: step `d`: a step that waits for a signal starts no handler: it takes no rate_limit",
        ]
    );
}

#[test]
fn a_template_may_give_its_tasks_a_priority() {
    let t = parse_template(
        "namespace: demo\nname: t\nversion: 1.0.0\npriority: 5\nsteps:\n  - {name: a, handler: noop}\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(t.priority, 5);
    let canonical = t.canonical_json();
    assert!(canonical.contains(r#""priority":5"#), "{canonical}");
    assert_eq!(parse_template(&canonical, "stored").unwrap().priority, 5);
    let plain = parse_template(&with_steps("  - {name: a, handler: noop}\n"), "t.yaml").unwrap();
    assert_eq!(plain.priority, 0);
    assert!(!plain.canonical_json().contains("priority"));
    assert_eq!(
        errors(
            "namespace: demo\nname: t\nversion: 1.0.0\npriority: 5000\nsteps:\n  - {name: a, handler: noop}\n"
        ),
        ["t.yaml:4:1: priority must be between -1000 and 1000 (higher runs first), got 5000"]
    );
}
