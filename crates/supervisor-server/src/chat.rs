//! `ChatService`: conversation threads over the engine's `threads`, each reply a task.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use supervisor_engine::workflow::WorkflowDef;
use supervisor_engine::{
    Engine, NewThread, Role, SearchHit, ThreadMessage, ThreadRecord, ThreadUpdate,
};
use supervisor_model::{NewTask, RoutingPrefs, TaskId};
use supervisor_node::Node;
use supervisor_proto::convert::timestamp_from_micros;
use supervisor_proto::v1;
use supervisor_proto::v1::chat_service_server::ChatService;
use tonic::{Request, Response, Status};

use crate::convert::{
    id_in, invalid, paging_in, status_from, status_out, task_id_in, task_out, task_type_in,
    task_type_out,
};
use crate::{auth, tenant};

/// The chat service of one node.
pub struct ChatApi {
    engine: Engine,
    node: Arc<Node>,
}

impl ChatApi {
    /// A chat service over `node`'s engine.
    pub fn new(node: Arc<Node>) -> Self {
        ChatApi {
            engine: node.engine().clone(),
            node,
        }
    }

    /// The context window a thread's replies can count on, from the providers that
    /// serve its type (0: unknown, the engine's default applies).
    fn window(&self, thread: &ThreadRecord) -> u64 {
        self.node
            .context_window(thread.task_type, &thread.preferred_providers)
            .unwrap_or(0)
    }
}

fn thread_id_in(field: &str, raw: &str) -> Result<TaskId, Status> {
    id_in(field, raw, "thread id")
}

fn message_out(m: ThreadMessage) -> v1::ThreadMessage {
    v1::ThreadMessage {
        seq: m.seq,
        role: match m.role {
            Role::User => v1::ThreadRole::User,
            Role::Assistant => v1::ThreadRole::Assistant,
        } as i32,
        text: m.text,
        task_id: m.task.map(|t| t.to_string()).unwrap_or_default(),
        status: m.status.map_or(0, |s| status_out(s) as i32),
        error: m.error.unwrap_or_default(),
        author: m.author,
        created_at: Some(timestamp_from_micros(m.at)),
    }
}

fn thread_out(t: ThreadRecord, messages: Vec<ThreadMessage>) -> v1::Thread {
    v1::Thread {
        id: t.id.to_string(),
        title: t.title,
        r#type: task_type_out(t.task_type) as i32,
        context: t.context.into_iter().collect::<HashMap<_, _>>(),
        about_task_id: t.about_task.map(|i| i.to_string()).unwrap_or_default(),
        about_run_id: t.about_run.map(|i| i.to_string()).unwrap_or_default(),
        created_by: t.created_by,
        created_at: Some(timestamp_from_micros(t.created_at)),
        updated_at: Some(timestamp_from_micros(t.updated_at)),
        message_count: t.next_seq.saturating_sub(1),
        open_turn_task_id: t.open_turn.map(|i| i.to_string()).unwrap_or_default(),
        messages: messages.into_iter().map(message_out).collect(),
        context_tokens: t.context_tokens,
        preferred_providers: t.preferred_providers,
    }
}

fn update_out(u: ThreadUpdate) -> v1::ThreadEvent {
    use v1::thread_event::Event;
    let event = match u {
        ThreadUpdate::Message(m) => Event::Message(message_out(m)),
        ThreadUpdate::Delta {
            task,
            lease,
            attempt,
            offset,
            text,
        } => Event::Delta(v1::ReplyDelta {
            task_id: task.to_string(),
            attempt,
            offset,
            text,
            lease,
        }),
        ThreadUpdate::Turn {
            task,
            status,
            message,
        } => Event::Turn(v1::TurnStatus {
            task_id: task.to_string(),
            status: status_out(status) as i32,
            message,
        }),
    };
    v1::ThreadEvent { event: Some(event) }
}

fn hit_out(h: SearchHit) -> v1::SearchHit {
    v1::SearchHit {
        thread_id: h.thread.to_string(),
        title: h.title,
        message: Some(message_out(h.message)),
        excerpt: h.excerpt,
    }
}

type ThreadStream = Pin<Box<dyn Stream<Item = Result<v1::ThreadEvent, Status>> + Send>>;

/// The instruction of a conversion when the caller gives none.
const DEFAULT_INSTRUCTION: &str =
    "Do what was agreed in this conversation. Say briefly what you did.";

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn create_thread(
        &self,
        req: Request<v1::CreateThreadRequest>,
    ) -> Result<Response<v1::Thread>, Status> {
        let principal = auth::principal_in(req.extensions());
        let r = req.into_inner();
        let task_type = task_type_in("type", r.r#type)?;
        let about = |field: &str, raw: &str| -> Result<Option<TaskId>, Status> {
            if raw.is_empty() {
                Ok(None)
            } else {
                task_id_in(field, raw).map(Some)
            }
        };
        if !r.preferred_providers.is_empty() {
            crate::convert::check_providers(
                &r.preferred_providers,
                &[],
                &self.node.known_provider_names(),
            )
            .map_err(|(field, message)| invalid(field, message))?;
        }
        let context: BTreeMap<String, String> = r.context.into_iter().collect();
        crate::repository_servable(&context, &self.node)?;
        let thread = self
            .engine
            .create_thread(
                &principal.tenant,
                NewThread {
                    title: r.title,
                    task_type,
                    context,
                    about_task: about("about_task_id", &r.about_task_id)?,
                    about_run: about("about_run_id", &r.about_run_id)?,
                    context_tokens: r.context_tokens,
                    preferred_providers: r.preferred_providers,
                    created_by: principal.id.clone(),
                },
            )
            .await
            .map_err(status_from)?;
        Ok(Response::new(thread_out(thread, Vec::new())))
    }

    async fn get_thread(
        &self,
        req: Request<v1::GetThreadRequest>,
    ) -> Result<Response<v1::Thread>, Status> {
        let tenant = tenant(&req);
        let id = thread_id_in("id", &req.get_ref().id)?;
        let (thread, messages) = self
            .engine
            .get_thread(&tenant, id, crate::fit::ITEM_BUDGET / 2)
            .await
            .map_err(status_from)?;
        let mut out = thread_out(thread, messages);
        // Within the response limit: the oldest messages are left out first (WatchThread
        // from 0 reads every one).
        let budget = crate::fit::ITEM_BUDGET;
        let mut size = prost::Message::encoded_len(&out);
        let mut drop = 0;
        while size > budget && drop < out.messages.len() {
            size -= prost::Message::encoded_len(&out.messages[drop]) + 8;
            drop += 1;
        }
        out.messages.drain(..drop);
        Ok(Response::new(out))
    }

    async fn list_threads(
        &self,
        req: Request<v1::ListThreadsRequest>,
    ) -> Result<Response<v1::ListThreadsResponse>, Status> {
        let tenant = tenant(&req);
        let r = req.into_inner();
        let (page_size, before) = paging_in(r.page_size, &r.page_token, "ListThreads")?;
        let page = self
            .engine
            .list_threads(&tenant, before, page_size)
            .await
            .map_err(status_from)?;
        let mut threads: Vec<v1::Thread> = page
            .threads
            .into_iter()
            .map(|t| thread_out(t, Vec::new()))
            .collect();
        // Within the response limit, as every list: a page of large contexts ends early.
        let cut = crate::fit::page(&mut threads);
        let next_page_token = if cut || page.more {
            threads.last().map(|t| t.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListThreadsResponse {
            threads,
            next_page_token,
        }))
    }

    async fn post_message(
        &self,
        req: Request<v1::PostMessageRequest>,
    ) -> Result<Response<v1::PostMessageResponse>, Status> {
        let principal = auth::principal_in(req.extensions());
        let r = req.into_inner();
        let id = thread_id_in("thread_id", &r.thread_id)?;
        let thread = self
            .engine
            .thread_record(&principal.tenant, id)
            .await
            .map_err(status_from)?;
        let span = crate::submit_span(Some(thread.task_type));
        let trace = supervisor_telemetry::context::traceparent_of(&span);
        let posted = self
            .engine
            .post_message(
                &principal.tenant,
                id,
                &r.text,
                &principal.id,
                self.window(&thread),
                trace,
            )
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::PostMessageResponse {
            message: Some(message_out(posted.message)),
            turn: Some(task_out(posted.turn)),
            omitted_messages: posted.omitted,
        }))
    }

    type WatchThreadStream = ThreadStream;

    async fn watch_thread(
        &self,
        req: Request<v1::WatchThreadRequest>,
    ) -> Result<Response<Self::WatchThreadStream>, Status> {
        let tenant = tenant(&req);
        let r = req.into_inner();
        let id = thread_id_in("thread_id", &r.thread_id)?;
        let updates = self
            .engine
            .watch_thread(&tenant, id, r.after_seq)
            .await
            .map_err(status_from)?;
        let leaving = crate::until_leaving(&self.node);
        let stream = updates
            .map(|u| u.map(update_out).map_err(status_from))
            .take_until(leaving);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn search_threads(
        &self,
        req: Request<v1::SearchThreadsRequest>,
    ) -> Result<Response<v1::SearchThreadsResponse>, Status> {
        let tenant = tenant(&req);
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 20,
            n @ 1..=100 => n as usize,
            n => return Err(invalid("limit", format!("{n} is too many; at most 100"))),
        };
        let (hits, truncated) = self
            .engine
            .search_threads(&tenant, &r.query, limit)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::SearchThreadsResponse {
            hits: hits.into_iter().map(hit_out).collect(),
            truncated,
        }))
    }

    async fn convert_thread(
        &self,
        req: Request<v1::ConvertThreadRequest>,
    ) -> Result<Response<v1::ConvertThreadResponse>, Status> {
        let principal = auth::principal_in(req.extensions());
        let r = req.into_inner();
        let id = thread_id_in("thread_id", &r.thread_id)?;
        let instruction = match r.instruction.trim() {
            "" => DEFAULT_INSTRUCTION.to_string(),
            text => text.to_string(),
        };
        let (thread, transcript) = self
            .engine
            .thread_transcript(&principal.tenant, id, &instruction, |t| self.window(t))
            .await
            .map_err(status_from)?;
        if !r.workflow.trim().is_empty() {
            let def = WorkflowDef::from_yaml(&r.workflow).map_err(|e| invalid("workflow", e))?;
            let mut vars: BTreeMap<String, String> = r.vars.into_iter().collect();
            vars.insert("conversation".into(), transcript);
            let run = self
                .engine
                .submit_workflow(&principal.tenant, def, vars)
                .await
                .map_err(status_from)?;
            return Ok(Response::new(v1::ConvertThreadResponse {
                task: None,
                run_id: run.id.to_string(),
            }));
        }
        let task_type = task_type_in("type", r.r#type)?.unwrap_or(thread.task_type);
        let new = NewTask {
            task_type: Some(task_type),
            prompt: transcript,
            labels: vec![format!("thread:{id}")],
            idempotency_key: Some(r.idempotency_key).filter(|k| !k.is_empty()),
            context: thread.context.clone(),
            routing: RoutingPrefs {
                preferred_providers: thread.preferred_providers.clone(),
                ..RoutingPrefs::default()
            },
            submitted_by: Some(principal.id.clone()),
            ..NewTask::default()
        };
        let submitted = self
            .engine
            .submit(&principal.tenant, new)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::ConvertThreadResponse {
            task: Some(task_out(submitted.task)),
            run_id: String::new(),
        }))
    }

    async fn delete_thread(
        &self,
        req: Request<v1::DeleteThreadRequest>,
    ) -> Result<Response<v1::DeleteThreadResponse>, Status> {
        let tenant = tenant(&req);
        let id = thread_id_in("id", &req.get_ref().id)?;
        let (messages_deleted, cancelled) = self
            .engine
            .delete_thread(&tenant, id)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::DeleteThreadResponse {
            messages_deleted,
            cancelled_task_id: cancelled.map(|t| t.to_string()).unwrap_or_default(),
        }))
    }
}
