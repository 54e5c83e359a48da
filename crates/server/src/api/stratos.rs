//! The Stratos 4.1 REST subset that Stratos' sample scripts use, under `/api`.
//!
//! Artifacts are taken as Stratos wrote them and answered with Stratos' response shape
//! (`{"statusCode": …, "message": …}`), so existing curl scripts and clients work unchanged.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use cairn_engine::view::{ClusterView, GroupView};
use cairn_model::{ArtifactKind, Diagnostic, Diagnostics};
use serde_json::{Value, json};

use super::{body_text, status_of};
use crate::platform::{Platform, PlatformError, Registration, unknown_alias};

/// The artifact collections and the kind each holds.
const COLLECTIONS: [(&str, ArtifactKind); 8] = [
    ("autoscalingPolicies", ArtifactKind::AutoscalingPolicy),
    ("networkPartitions", ArtifactKind::NetworkPartition),
    ("deploymentPolicies", ArtifactKind::DeploymentPolicy),
    ("cartridges", ArtifactKind::Cartridge),
    ("cartridgeGroups", ArtifactKind::CartridgeGroup),
    ("applicationPolicies", ArtifactKind::ApplicationPolicy),
    ("applications", ArtifactKind::Application),
    ("kubernetesClusters", ArtifactKind::KubernetesCluster),
];

#[derive(Clone)]
struct Api {
    platform: Arc<Platform>,
    /// `Basic <base64(user:password)>`, compared whole.
    authorization: Arc<str>,
}

pub fn router(platform: Arc<Platform>, user: &str, password: &str) -> Router {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let api = Api {
        platform,
        authorization: format!("Basic {token}").into(),
    };
    let mut router = Router::new();
    for (collection, kind) in COLLECTIONS {
        router = router
            .route(
                &format!("/api/{collection}"),
                get(move |s: State<Api>| list(s, kind))
                    .post(move |s: State<Api>, h: HeaderMap, b: Bytes| {
                        create(s, (collection, kind), h, b, Registration::New, None)
                    })
                    .put(move |s: State<Api>, h: HeaderMap, b: Bytes| {
                        create(s, (collection, kind), h, b, Registration::Update, None)
                    }),
            )
            .route(
                &format!("/api/{collection}/{{id}}"),
                get(move |s: State<Api>, p: Path<String>| get_one(s, kind, p))
                    .put(
                        move |s: State<Api>, h: HeaderMap, Path(id): Path<String>, b: Bytes| {
                            create(s, (collection, kind), h, b, Registration::Update, Some(id))
                        },
                    )
                    .delete(move |s: State<Api>, p: Path<String>| delete(s, kind, p)),
            );
    }
    router
        .route("/api/applications/{id}/deploy/{policy}", post(deploy))
        .route("/api/applications/{id}/undeploy", post(undeploy))
        .route("/api/applications/{id}/runtime", get(runtime))
        .route(
            "/api/applications/{id}/domainMappings",
            post(add_domain_mappings).get(get_domain_mappings),
        )
        .route(
            "/api/applications/{id}/domainMappings/{domain}",
            axum::routing::delete(remove_domain_mapping),
        )
        .fallback(|| async { refusal(PlatformError::NotFound("no such resource".into())) })
        .method_not_allowed_fallback(|| async {
            message(
                StatusCode::METHOD_NOT_ALLOWED,
                "the resource does not take this method".into(),
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), basic_auth))
        .with_state(api)
}

async fn basic_auth(
    State(api): State<Api>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(&*api.authorization) {
        return next.run(request).await;
    }
    let reason = match given {
        Some(_) => "authentication failed: wrong user or password",
        None => "authentication failed: basic credentials required",
    };
    let mut response = message(StatusCode::UNAUTHORIZED, reason.into());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"cairn\""),
    );
    response
}

/// Stratos' response body: `{"statusCode": 201, "message": "…"}`.
fn message(status: StatusCode, text: String) -> Response {
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "message": text})),
    )
        .into_response()
}

fn refusal(error: PlatformError) -> Response {
    message(status_of(&error), error.to_string())
}

/// `text` with `success` when the platform did it, else the refusal.
fn answer(result: Result<(), PlatformError>, success: StatusCode, text: String) -> Response {
    match result {
        Ok(()) => message(success, text),
        Err(e) => refusal(e),
    }
}

async fn create(
    State(api): State<Api>,
    (collection, kind): (&'static str, ArtifactKind),
    headers: HeaderMap,
    body: Bytes,
    registration: Registration,
    // A PUT to an artifact's own URL, whose body must be that artifact.
    path_id: Option<String>,
) -> Response {
    let checked = match body_text(&body) {
        Ok(text) => cairn_model::check_stratos_artifact(kind, "request body", text),
        Err(e) => return refusal(e),
    };
    let ids = match checked.clone().into_result() {
        Ok(bundle) => first_id(&bundle),
        Err(problems) => return refusal(PlatformError::Invalid(problems)),
    };
    if let Some(path_id) = path_id.filter(|path_id| *path_id != ids) {
        let message = format!(
            "the body is {} {ids}, not {path_id} as the path says",
            kind.name()
        );
        return refusal(PlatformError::invalid_body(None, "$", message));
    }
    let document = body_text(&body).ok().and_then(cairn_model::lenient_json);
    match api.platform.add(&checked, registration, document.as_ref()) {
        Ok(()) => {
            if registration == Registration::Update {
                // Stratos 4.1 answers an updated application with 201, every other update with 200.
                let status = match kind {
                    ArtifactKind::Application => StatusCode::CREATED,
                    _ => StatusCode::OK,
                };
                return message(
                    status,
                    format!("{} updated successfully: {ids}", kind.name()),
                );
            }
            let mut response = message(
                StatusCode::CREATED,
                format!("{} added successfully: {ids}", kind.name()),
            );
            if let Some(location) = location(&headers, collection, &ids) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => refusal(e),
    }
}

/// Where the artifact created can be read, as Stratos names it in `Location`: the absolute
/// URL of its collection and its id.
fn location(headers: &HeaderMap, collection: &str, id: &str) -> Option<HeaderValue> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let mut url = format!("https://{host}/api/{collection}/");
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            let _ = write!(url, "%{byte:02X}");
        }
    }
    HeaderValue::from_str(&url).ok()
}

fn first_id(bundle: &cairn_model::Bundle) -> String {
    let ids = [
        bundle.cartridges.first().map(|x| &x.kind),
        bundle.cartridge_groups.first().map(|x| &x.name),
        bundle.applications.first().map(|x| &x.id),
        bundle.autoscaling_policies.first().map(|x| &x.id),
        bundle.deployment_policies.first().map(|x| &x.id),
        bundle.application_policies.first().map(|x| &x.id),
        bundle.network_partitions.first().map(|x| &x.id),
        bundle.kubernetes_clusters.first().map(|x| &x.id),
    ];
    ids.into_iter()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_default()
}

async fn list(State(api): State<Api>, kind: ArtifactKind) -> Response {
    let catalog = api.platform.catalog();
    let items: Vec<Value> = catalog
        .stratos_documents(kind)
        .into_iter()
        .map(|(id, value)| {
            let value = api.platform.document(kind, &id).unwrap_or(value);
            with_status(&api.platform, kind, &id, value)
        })
        .collect();
    // Stratos answers an empty collection with 404, and its clients read that as empty.
    if items.is_empty() {
        return refusal(PlatformError::NotFound(format!(
            "no {} is registered",
            kind.name()
        )));
    }
    Json(items).into_response()
}

async fn get_one(State(api): State<Api>, kind: ArtifactKind, Path(id): Path<String>) -> Response {
    let catalog = api.platform.catalog();
    match catalog
        .stratos_documents(kind)
        .into_iter()
        .find(|(x, _)| *x == id)
    {
        Some((id, value)) => {
            let value = api.platform.document(kind, &id).unwrap_or(value);
            Json(with_status(&api.platform, kind, &id, value)).into_response()
        }
        None => refusal(PlatformError::NotFound(format!(
            "{} {id} not found",
            kind.name()
        ))),
    }
}

/// Applications carry Stratos' `status`: Created, or Deployed once deployed.
fn with_status(platform: &Platform, kind: ArtifactKind, id: &str, mut value: Value) -> Value {
    if kind == ArtifactKind::Application
        && let Value::Object(map) = &mut value
    {
        map.insert("applicationId".into(), Value::String(id.to_string()));
        let status = if platform.is_deployed(id) {
            "Deployed"
        } else {
            "Created"
        };
        map.insert("status".into(), Value::String(status.into()));
    }
    value
}

async fn delete(State(api): State<Api>, kind: ArtifactKind, Path(id): Path<String>) -> Response {
    answer(
        api.platform.remove(kind, &id),
        StatusCode::OK,
        format!("{} deleted successfully: {id}", kind.name()),
    )
}

async fn deploy(State(api): State<Api>, Path((id, policy)): Path<(String, String)>) -> Response {
    if !api.platform.has_application(&id) {
        return refusal(PlatformError::unknown_application(&id));
    }
    answer(
        api.platform.deploy(&id, &policy).await,
        StatusCode::ACCEPTED,
        format!("application deployed successfully: {id}"),
    )
}

async fn undeploy(State(api): State<Api>, Path(id): Path<String>) -> Response {
    if !api.platform.catalog().applications.contains_key(&id) {
        return refusal(PlatformError::unknown_application(&id));
    }
    answer(
        api.platform.undeploy(&id).await,
        StatusCode::ACCEPTED,
        format!("application undeployed successfully: {id}"),
    )
}

/// Adds mappings to those the application has, as Stratos does; one for a domain that is
/// mapped already replaces it.
async fn add_domain_mappings(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let bundle = match body_text(&body).and_then(|text| {
        cairn_model::parse_domain_mappings(&id, "request body", text)
            .map_err(PlatformError::Invalid)
    }) {
        Ok(bundle) => bundle,
        Err(e) => return refusal(e),
    };
    let problems = cairn_model::validate_bundle(&bundle);
    if !problems.0.is_empty() {
        return refusal(PlatformError::Invalid(problems));
    }
    let added: Vec<_> = bundle.domain_mappings.into_values().flatten().collect();
    // Told where the client wrote them; the platform checks again under its lock.
    let catalog = api.platform.catalog();
    if let Some(application) = catalog.application(&id) {
        let aliases = application.cartridge_aliases();
        let unknown: Vec<Diagnostic> = added
            .iter()
            .enumerate()
            .filter(|(_, m)| !aliases.contains(&m.cartridge_alias.as_str()))
            .map(|(i, m)| {
                let path = format!("$.domainMappings[{i}].cartridgeAlias");
                unknown_alias("request body", path, m)
            })
            .collect();
        if !unknown.is_empty() {
            return refusal(PlatformError::Invalid(Diagnostics(unknown)));
        }
    }
    let changed = api
        .platform
        .change_domain_mappings(&id, |mappings| {
            for mapping in added {
                mappings.retain(|m| !m.is_for(&mapping.domain_name));
                mappings.push(mapping);
            }
            Ok(())
        })
        .await;
    answer(
        changed,
        StatusCode::CREATED,
        format!("domain mappings added successfully: {id}"),
    )
}

/// Stratos' DomainMappingBean list; 404 when the application has none.
async fn get_domain_mappings(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let catalog = api.platform.catalog();
    if !catalog.applications.contains_key(&id) {
        return refusal(PlatformError::unknown_application(&id));
    }
    let mappings = catalog
        .stratos_documents(ArtifactKind::DomainMappings)
        .into_iter()
        .find(|(app, _)| *app == id);
    let Some((_, beans)) = mappings else {
        return refusal(PlatformError::NotFound(format!(
            "no domain mappings found for application {id}"
        )));
    };
    Json(beans).into_response()
}

async fn remove_domain_mapping(
    State(api): State<Api>,
    Path((id, domain)): Path<(String, String)>,
) -> Response {
    let removed = api
        .platform
        .change_domain_mappings(&id, |mappings| {
            let before = mappings.len();
            mappings.retain(|m| !m.is_for(&domain));
            if mappings.len() == before {
                return Err(PlatformError::NotFound(format!(
                    "application {id} has no mapping for domain {domain}"
                )));
            }
            Ok(())
        })
        .await;
    answer(
        removed,
        StatusCode::OK,
        format!("domain mapping removed successfully: {domain}"),
    )
}

/// Stratos' ApplicationInfoBean: application instances, group instances, cluster instances, members.
async fn runtime(State(api): State<Api>, Path(id): Path<String>) -> Response {
    // As in Stratos, an application that is not deployed has no runtime.
    let Some(view) = api.platform.view(&id) else {
        return refusal(PlatformError::NotFound(format!(
            "application runtime not found: {id}"
        )));
    };
    let status = format!("{:?}", view.status);
    let instance = json!({
        "instanceId": format!("{id}-1"),
        "status": status,
        "clusterInstances": view.clusters.iter().map(cluster_info).collect::<Vec<_>>(),
        "groupInstances": view.groups.iter().flat_map(group_infos).collect::<Vec<_>>(),
    });
    Json(json!({
        "applicationId": id,
        "status": status,
        "applicationInstances": [instance],
    }))
    .into_response()
}

fn group_infos(group: &GroupView) -> Vec<Value> {
    group
        .instances
        .iter()
        .map(|i| {
            json!({
                "groupId": group.alias,
                "instanceId": i.id,
                "status": format!("{:?}", i.status),
                "networkPartitionId": i.network_partition,
                "clusterInstances": i.clusters.iter().map(cluster_info).collect::<Vec<_>>(),
                "groupInstances": i.groups.iter().flat_map(group_infos).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn cluster_info(cluster: &ClusterView) -> Value {
    json!({
        "alias": cluster.alias,
        "serviceName": cluster.cartridge,
        "status": format!("{:?}", cluster.status),
        "member": cluster.members.iter().map(|m| json!({
            "memberId": m.id,
            "status": format!("{:?}", m.status),
            "networkPartitionId": m.network_partition,
            "partitionId": m.partition,
            "defaultPrivateIP": m.host,
            "ports": m.ports,
            "createdTime": m.created_at,
            "activeTime": m.active_at,
        })).collect::<Vec<_>>(),
    })
}
