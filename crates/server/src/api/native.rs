//! Cairn's own REST API, under `/v1`, described at `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::{body_text, status_of};
use crate::platform::{AppSummary, Platform, PlatformError, Registration};

#[derive(OpenApi)]
#[openapi(
    info(title = "Cairn", description = "Cairn's native REST API"),
    paths(
        healthz,
        list_applications,
        post_blueprint,
        get_application,
        deploy_application,
        undeploy_application,
        delete_application,
        cluster_logs,
        scale_cluster,
        autoscale_cluster,
        list_events,
        loadbalancer_stats
    ),
    components(schemas(
        AppSummary,
        ErrorBody,
        DeployRequest,
        BlueprintAccepted,
        ScaleRequest,
        AutoscaleRequest
    ))
)]
struct ApiDoc;

pub fn router(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/v1/applications", get(list_applications))
        .route("/v1/blueprints", post(post_blueprint))
        .route(
            "/v1/applications/{id}",
            get(get_application).delete(delete_application),
        )
        .route("/v1/applications/{id}/deploy", post(deploy_application))
        .route("/v1/applications/{id}/undeploy", post(undeploy_application))
        .route(
            "/v1/applications/{id}/clusters/{alias}/logs",
            get(cluster_logs),
        )
        .route(
            "/v1/applications/{id}/clusters/{alias}/scale",
            post(scale_cluster),
        )
        .route(
            "/v1/applications/{id}/clusters/{alias}/autoscale",
            post(autoscale_cluster),
        )
        .route("/v1/events", get(list_events))
        .route("/v1/loadbalancer", get(loadbalancer_stats))
        .with_state(platform)
}

/// A refusal: the reason, and where the input was wrong.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[schema(value_type = Vec<Object>)]
    pub diagnostics: Vec<cairn_model::Diagnostic>,
}

pub struct ApiError(PlatformError);

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let diagnostics = match &self.0 {
            PlatformError::Invalid(d) => d.0.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: self.0.to_string(),
            diagnostics,
        };
        (status_of(&self.0), Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the control plane answers")))]
async fn healthz() -> &'static str {
    "ok"
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[utoipa::path(get, path = "/v1/applications", responses((status = 200, body = Vec<AppSummary>)))]
async fn list_applications(State(platform): State<Arc<Platform>>) -> Json<Vec<AppSummary>> {
    Json(platform.applications())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct BlueprintQuery {
    /// Deploy the blueprint's application after registering it (default true).
    deploy: Option<bool>,
    /// The file name errors should name.
    source: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlueprintAccepted {
    pub applications: Vec<String>,
    pub deployed: Vec<String>,
}

/// Registers every artifact of a YAML blueprint and deploys its application.
#[utoipa::path(
    post,
    path = "/v1/blueprints",
    params(BlueprintQuery),
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 201, body = BlueprintAccepted), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody))
)]
async fn post_blueprint(
    State(platform): State<Arc<Platform>>,
    Query(query): Query<BlueprintQuery>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<BlueprintAccepted>)> {
    let source = query.source.unwrap_or_else(|| "request body".into());
    let text = body_text(&body)?;
    let checked = cairn_model::check_yaml(&source, text);
    let bundle = checked
        .clone()
        .into_result()
        .map_err(PlatformError::Invalid)?;
    let applications: Vec<String> = bundle.applications.iter().map(|a| a.id.clone()).collect();
    let deploy = query.deploy.unwrap_or(true) && !applications.is_empty();
    // Whatever would stop the deployment stops the registration too, so a refused blueprint
    // leaves nothing behind.
    let policy = match (&bundle.deploy_with, deploy) {
        (_, false) => None,
        (Some(policy), true) => Some(policy.clone()),
        (None, true) => {
            return Err(PlatformError::Conflict(format!(
                "{source}: the blueprint names no application policy to deploy with"
            ))
            .into());
        }
    };
    let being_undeployed = || {
        applications
            .iter()
            .try_for_each(|app| platform.refuse_while_undeploying(app))
    };
    being_undeployed()?;
    if let Some(policy) = &policy {
        let mut catalog = platform.catalog();
        catalog.add_bundle(bundle.clone());
        let files = std::slice::from_ref(&checked);
        let mut specs = Vec::new();
        let mut problems = Vec::new();
        for app in &applications {
            match cairn_model::resolve(&catalog, app, policy) {
                Ok(spec) => specs.push(spec),
                Err(_) => {
                    problems.extend(cairn_model::resolve_in_files(&catalog, app, policy, files))
                }
            }
        }
        if !problems.is_empty() {
            return Err(PlatformError::Invalid(cairn_model::Diagnostics(problems)).into());
        }
        for spec in &specs {
            platform.free_proxy_ports(spec, &catalog)?;
        }
    }
    platform.add(&checked, Registration::Any, None)?;
    let mut deployed = Vec::new();
    if let Some(policy) = policy {
        // An application deployed already was not changed (`add` refuses that): it stays as it is.
        let running = platform.deployed();
        // An undeploy that began since the first look leaves the registration as it was (`add`
        // changed nothing of a deployed application), so refusing now still leaves nothing.
        being_undeployed()?;
        for app in &applications {
            if !running.contains(app) {
                platform.deploy(app, &policy).await?;
            }
            deployed.push(app.clone());
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(BlueprintAccepted {
            applications,
            deployed,
        }),
    ))
}

/// The runtime view: application, group instances, clusters, members.
#[utoipa::path(
    get,
    path = "/v1/applications/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
async fn get_application(
    State(platform): State<Arc<Platform>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match platform.view(&id) {
        Some(view) => Ok(Json(view).into_response()),
        None if platform.has_application(&id) => {
            Err(PlatformError::NotFound(format!("application {id} is not deployed")).into())
        }
        None => Err(PlatformError::unknown_application(&id).into()),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The application policy; may be left out when exactly one is registered.
    pub application_policy: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/applications/{id}/deploy",
    params(("id" = String, Path)),
    request_body = DeployRequest,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
async fn deploy_application(
    State(platform): State<Arc<Platform>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    if !platform.has_application(&id) {
        return Err(PlatformError::unknown_application(&id).into());
    }
    let request: DeployRequest = if body.trim_ascii().is_empty() {
        DeployRequest::default()
    } else {
        request_body(&body, r#"{"application_policy": "…"}"#)?
    };
    let policy = match request.application_policy {
        Some(p) => p,
        None => {
            let catalog = platform.catalog();
            let mut ids = catalog.application_policies.keys();
            match (ids.next(), ids.next()) {
                (Some(only), None) => only.clone(),
                _ => {
                    return Err(PlatformError::invalid_body(
                        None,
                        "$",
                        "name the application_policy to deploy with".into(),
                    )
                    .into());
                }
            }
        }
    };
    platform.deploy(&id, &policy).await?;
    Ok(StatusCode::ACCEPTED)
}

/// A JSON request body of the given `shape`, or a problem naming its place and the reason.
fn request_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, PlatformError> {
    if body.trim_ascii().is_empty() {
        return Err(PlatformError::invalid_body(
            None,
            "$",
            format!("the body is empty; expected {shape}"),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = match e.path().to_string().as_str() {
            "." => "$".to_string(),
            field => format!("$.{field}"),
        };
        let error = e.into_inner();
        let line = (error.line() > 0).then(|| (error.line(), error.column()));
        let text = error.to_string();
        // The line and column are in the location already.
        let reason = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(reason, _)| reason);
        PlatformError::invalid_body(line, &path, format!("{reason}; expected {shape}"))
    })
}

#[utoipa::path(
    post,
    path = "/v1/applications/{id}/undeploy",
    params(("id" = String, Path)),
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
async fn undeploy_application(
    State(platform): State<Arc<Platform>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !platform.has_application(&id) {
        return Err(PlatformError::unknown_application(&id).into());
    }
    platform.undeploy(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(
    delete,
    path = "/v1/applications/{id}",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
async fn delete_application(
    State(platform): State<Arc<Platform>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    platform.remove(cairn_model::ArtifactKind::Application, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct LogQuery {
    /// Lines from the end of each member's log (default 100).
    tail: Option<usize>,
    /// Keep the response open and stream new output.
    follow: Option<bool>,
}

/// Output of every member of a cluster, each line prefixed with the member id.
#[utoipa::path(
    get,
    path = "/v1/applications/{id}/clusters/{alias}/logs",
    params(("id" = String, Path), ("alias" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody))
)]
async fn cluster_logs(
    State(platform): State<Arc<Platform>>,
    Path((id, alias)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let Some(members) = platform.cluster_members(&id, &alias) else {
        return Err(PlatformError::NotFound(format!(
            "application {id} has no deployed cluster {alias}"
        ))
        .into());
    };
    let dir = platform.log_dir();
    let tail = query.tail.unwrap_or(100);
    let mut text = String::new();
    let mut offsets = Vec::new();
    for member in &members {
        let log = cairn_runtime::read_log(&dir, member, tail);
        for line in log.lines() {
            text.push_str(&format!("{member} | {line}\n"));
        }
        let size = std::fs::metadata(cairn_runtime::log_path(&dir, member))
            .map(|m| m.len())
            .unwrap_or(0);
        offsets.push((member.clone(), size));
    }
    if !query.follow.unwrap_or(false) {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let head =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) });
    let state = (platform, id, alias, dir, offsets, false);
    let follow = futures_util::stream::unfold(
        state,
        |(platform, id, alias, dir, mut offsets, ended)| async move {
            if ended {
                return None;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                // Members that come later are followed from their first line; once the cluster
                // is gone, what its members wrote last is read and the stream ends.
                let current = platform.cluster_members(&id, &alias);
                let ended = current.is_none();
                for member in current.into_iter().flatten() {
                    if !offsets.iter().any(|(known, _)| *known == member) {
                        offsets.push((member, 0));
                    }
                }
                let mut chunk = String::new();
                loop {
                    let before = chunk.len();
                    for (member, offset) in offsets.iter_mut() {
                        let Ok(read) = cairn_runtime::follow_log(&dir, member, *offset) else {
                            continue;
                        };
                        *offset = read.next_offset;
                        for line in String::from_utf8_lossy(&read.data).lines() {
                            chunk.push_str(&format!("{member} | {line}\n"));
                        }
                    }
                    // A read takes a bounded part; once the cluster is gone, read to the end.
                    if !ended || chunk.len() == before {
                        break;
                    }
                }
                match (chunk.is_empty(), ended) {
                    (true, true) => return None,
                    (true, false) => continue,
                    (false, ended) => {
                        let state = (platform, id, alias, dir, offsets, ended);
                        return Some((Ok(Bytes::from(chunk)), state));
                    }
                }
            }
        },
    );
    let body = Body::from_stream(head.chain(follow));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Members to keep, within the cluster's [min, max]; autoscaling stays off until resumed.
    pub size: u32,
}

/// Sets a cluster's size by hand and suspends its autoscaling.
#[utoipa::path(
    post,
    path = "/v1/applications/{id}/clusters/{alias}/scale",
    params(("id" = String, Path), ("alias" = String, Path)),
    request_body = ScaleRequest,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
async fn scale_cluster(
    State(platform): State<Arc<Platform>>,
    Path((id, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: ScaleRequest = request_body(&body, r#"{"size": N}"#)?;
    platform.scale(&id, &alias, Some(request.size)).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleRequest {
    /// True hands the cluster back to the autoscaler; false holds it at its current size.
    pub enabled: bool,
}

#[utoipa::path(
    post,
    path = "/v1/applications/{id}/clusters/{alias}/autoscale",
    params(("id" = String, Path), ("alias" = String, Path)),
    request_body = AutoscaleRequest,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn autoscale_cluster(
    State(platform): State<Arc<Platform>>,
    Path((id, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: AutoscaleRequest = request_body(&body, r#"{"enabled": true|false}"#)?;
    let size = if request.enabled {
        None
    } else {
        // One size holds every group instance: the largest keeps each at least where it is.
        let desired = platform
            .view(&id)
            .and_then(|view| {
                let mut found = None;
                crate::platform::visit_view_clusters(&view, &mut |c| {
                    if c.alias == alias {
                        found = Some(found.unwrap_or(0).max(c.desired));
                    }
                });
                found
            })
            .ok_or_else(|| {
                PlatformError::NotFound(format!("application {id} has no deployed cluster {alias}"))
            })?;
        Some(desired)
    };
    platform.scale(&id, &alias, size).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EventQuery {
    application: Option<String>,
    /// Keep the response open and stream new events, one JSON object per line.
    follow: Option<bool>,
}

/// An event as the API shows it: its time in RFC 3339 with milliseconds, like the runtime view's.
fn event_json(event: &cairn_engine::Event) -> serde_json::Value {
    let mut json = serde_json::to_value(event).unwrap_or_default();
    if let Some(object) = json.as_object_mut() {
        object.insert("at".into(), cairn_engine::view::rfc3339(event.at).into());
    }
    json
}

#[utoipa::path(
    get,
    path = "/v1/events",
    params(EventQuery),
    responses((status = 200, body = Vec<Object>))
)]
async fn list_events(
    State(platform): State<Arc<Platform>>,
    Query(query): Query<EventQuery>,
) -> Response {
    if let Some(app) = &query.application
        && !platform.has_application(app)
        && platform.events().recent(Some(app)).is_empty()
    {
        return ApiError::from(PlatformError::unknown_application(app)).into_response();
    }
    if !query.follow.unwrap_or(false) {
        let events: Vec<serde_json::Value> = platform
            .events()
            .recent(query.application.as_deref())
            .iter()
            .map(event_json)
            .collect();
        return Json(events).into_response();
    }
    let mut lines = String::new();
    for event in platform.events().recent(query.application.as_deref()) {
        lines.push_str(&event_json(&event).to_string());
        lines.push('\n');
    }
    let head =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(lines)) });
    let feed = platform.events().follow();
    let application = query.application;
    let follow = futures_util::stream::unfold(feed, move |mut feed| {
        let application = application.clone();
        async move {
            loop {
                match feed.recv().await {
                    Ok(event)
                        if application
                            .as_deref()
                            .is_none_or(|a| a == event.application) =>
                    {
                        let mut line = event_json(&event).to_string();
                        line.push('\n');
                        return Some((Ok(Bytes::from(line)), feed));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let body = Body::from_stream(head.chain(follow));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[utoipa::path(get, path = "/v1/loadbalancer", responses((status = 200, body = Object)))]
async fn loadbalancer_stats(State(platform): State<Arc<Platform>>) -> Response {
    Json(platform.lb_stats()).into_response()
}
