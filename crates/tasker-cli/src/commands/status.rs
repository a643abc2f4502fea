//! `tasker status`: one task in detail, or a line per task.

use serde::Serialize;
use tasker_core::id::TaskId;
use tasker_core::store::{Store, TaskListParams};
use tasker_engine::{Engine, EngineError, HandlerRegistry};

use super::operate::operator;
use crate::report;
use crate::{CliError, Outcome};

/// Most tasks listed without an id.
const LIST_LIMIT: u32 = 1000;

pub async fn status<S: Store>(
    store: S,
    task_id: Option<&str>,
    json: bool,
) -> Result<Outcome, CliError> {
    let engine = operator(store, HandlerRegistry::with_builtins());
    let Some(id) = task_id else {
        return list(&engine, json).await;
    };
    let id: TaskId = id
        .parse()
        .map_err(|e| CliError::BadInput(format!("`{id}` is not a task id: {e}")))?;
    let detail = engine.task(id).await.map_err(|e| match e {
        EngineError::Store(tasker_core::store::StoreError::NotFound(_)) => {
            CliError::BadInput(format!("no task {id}"))
        }
        other => CliError::failed(other),
    })?;
    if json {
        println!("{}", report::json(&detail));
    } else {
        print!("{}", report::table(&detail));
        let queues = engine.paused_queues().await.map_err(CliError::failed)?;
        let templates = engine.paused_templates().await.map_err(CliError::failed)?;
        print!("{}", report::held(&detail, &queues, &templates));
    }
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct Line {
    task_id: String,
    template: String,
    state: &'static str,
}

async fn list<S: Store>(engine: &Engine<S>, json: bool) -> Result<Outcome, CliError> {
    let tasks = engine
        .tasks(TaskListParams {
            limit: LIST_LIMIT,
            ..Default::default()
        })
        .await
        .map_err(CliError::failed)?;
    let lines: Vec<Line> = tasks
        .iter()
        .map(|t| Line {
            task_id: t.id.to_string(),
            template: report::template_of(t),
            state: t.state.as_str(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string(&lines).expect("serializable"));
    } else {
        for (l, t) in lines.iter().zip(&tasks) {
            println!(
                "{}  {:<11}  {}  {}",
                l.task_id, l.state, t.created_at, l.template
            );
        }
    }
    Ok(Outcome::Success)
}
