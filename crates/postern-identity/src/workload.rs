//! [`Workload`]: what a workload token says about the job, pod or service behind it, read from
//! the verified claims by its issuer's preset (`[issuers.X] preset = "…"`).
//!
//! Each preset has its own claims: GitHub Actions' `repository`, `ref`, `workflow`, … at the top
//! level; Kubernetes' nested `kubernetes.io` object; the SPIFFE ID in a JWT-SVID's `sub`; an
//! OAuth client's `client_id` or `azp`. A claim a preset needs that is absent, empty or not a
//! string refuses the token, naming the claim, and so does a token that does not fit the preset
//! (a SPIFFE ID of another trust domain, a user's token where a client's is expected). Only
//! verified claims reach this module. Turning a workload into Cedar attributes is
//! `postern-policy`'s business: it reads them through [`Workload::attribute`].

use postern_config::{IssuerConfig, IssuerPreset};
use serde_json::{Map, Value};

use crate::error::{AuthError, echo};
use crate::limits::MAX_SPIFFE_ID_BYTES;

/// The name of every workload attribute, of every preset. No two presets share a name, so a
/// policy comparing an attribute with a non-empty value can only match tokens of the preset that
/// has it (the others' value is empty in Cedar). `kind` is not listed: it is always present.
pub const WORKLOAD_ATTRIBUTES: &[&str] = &[
    // GitHub Actions
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "ref",
    "ref_type",
    "environment",
    "workflow",
    "workflow_ref",
    "job_workflow_ref",
    "actor",
    "event_name",
    // Kubernetes
    "namespace",
    "service_account",
    "pod",
    // SPIFFE
    "trust_domain",
    "path",
    // OAuth client credentials
    "client_id",
];

/// The claim a token Postern issues by exchange carries the exchanged token's workload in (see
/// [`Workload::to_claim`]), so that policies on `principal.workload` hold for the exchanged token
/// as for the original. Read only from tokens Postern itself signed.
pub const EXCHANGED_WORKLOAD_CLAIM: &str = "postern_workload";

/// The workload a token names, by its issuer's preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// Boxed: it is several times the size of the others.
    GithubActions(Box<GithubActions>),
    Kubernetes(KubernetesServiceAccount),
    Spiffe(SpiffeId),
    OauthClient(OauthClient),
}

/// A GitHub Actions job, from its OIDC token.
/// <https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect#understanding-the-oidc-token>
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubActions {
    /// `repository`: `owner/name`. Required.
    pub repository: String,
    /// `repository_id`: survives renames, unlike the name.
    pub repository_id: Option<String>,
    /// `repository_owner`: the user or organisation.
    pub repository_owner: Option<String>,
    /// `repository_owner_id`.
    pub repository_owner_id: Option<String>,
    /// `ref`: `refs/heads/main`, `refs/tags/v1`, `refs/pull/7/merge`. Required.
    pub git_ref: String,
    /// `ref_type`: `branch` or `tag`.
    pub ref_type: Option<String>,
    /// `environment`: the job's deployment environment, when it has one.
    pub environment: Option<String>,
    /// `workflow`: the workflow's name. Required.
    pub workflow: String,
    /// `workflow_ref`: `owner/repo/.github/workflows/file.yml@ref`.
    pub workflow_ref: Option<String>,
    /// `job_workflow_ref`: the reusable workflow the job runs, if any, else the workflow.
    pub job_workflow_ref: Option<String>,
    /// `actor`: the account that started the run. Required.
    pub actor: String,
    /// `event_name`: `push`, `pull_request`, `workflow_dispatch`, ….
    pub event_name: Option<String>,
}

/// A Kubernetes service account, from a projected (bound) service-account token.
/// <https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens>
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesServiceAccount {
    /// `kubernetes.io.namespace`. Required.
    pub namespace: String,
    /// `kubernetes.io.serviceaccount.name`. Required.
    pub service_account: String,
    /// `kubernetes.io.pod.name`, when the token is bound to a pod.
    pub pod: Option<String>,
}

/// A SPIFFE workload, from a JWT-SVID's `sub`.
/// <https://github.com/spiffe/spiffe/blob/main/standards/JWT-SVID.md>
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    /// The trust domain, `example.org`: the configured one.
    pub trust_domain: String,
    /// The path, `/ns/prod/sa/api`: never empty.
    pub path: String,
}

/// An OAuth 2.0 client acting for itself (client credentials grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthClient {
    /// `client_id` (RFC 9068 §2.2), else `azp`.
    pub client_id: String,
}

impl Workload {
    /// The workload the claims of a token from an issuer configured with a preset name, or
    /// `None` when the issuer has no preset.
    ///
    /// # Errors
    /// A claim the preset needs is absent or unusable, or the token does not fit the preset.
    pub fn from_claims(
        config: &IssuerConfig,
        claims: &Map<String, Value>,
    ) -> Result<Option<Self>, AuthError> {
        let Some(preset) = config.preset else {
            return Ok(None);
        };
        let workload = match preset {
            IssuerPreset::GithubActions => Self::GithubActions(Box::new(github_actions(claims)?)),
            IssuerPreset::Kubernetes => Self::Kubernetes(kubernetes(claims)?),
            IssuerPreset::Spiffe => Self::Spiffe(spiffe(config, claims)?),
            IssuerPreset::OauthClient => Self::OauthClient(oauth_client(claims)?),
        };
        Ok(Some(workload))
    }

    /// The preset that read it.
    #[must_use]
    pub fn preset(&self) -> IssuerPreset {
        match self {
            Self::GithubActions(_) => IssuerPreset::GithubActions,
            Self::Kubernetes(_) => IssuerPreset::Kubernetes,
            Self::Spiffe(_) => IssuerPreset::Spiffe,
            Self::OauthClient(_) => IssuerPreset::OauthClient,
        }
    }

    /// `github_actions`, `kubernetes`, `spiffe` or `oauth_client`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.preset().as_str()
    }

    /// The value of attribute `name` (one of [`WORKLOAD_ATTRIBUTES`]), `None` when this
    /// workload's preset does not have it or the token did not say.
    #[must_use]
    pub fn attribute(&self, name: &str) -> Option<&str> {
        let value = match (self, name) {
            (Self::GithubActions(gha), _) => match name {
                "repository" => Some(&gha.repository),
                "repository_id" => gha.repository_id.as_ref(),
                "repository_owner" => gha.repository_owner.as_ref(),
                "repository_owner_id" => gha.repository_owner_id.as_ref(),
                "ref" => Some(&gha.git_ref),
                "ref_type" => gha.ref_type.as_ref(),
                "environment" => gha.environment.as_ref(),
                "workflow" => Some(&gha.workflow),
                "workflow_ref" => gha.workflow_ref.as_ref(),
                "job_workflow_ref" => gha.job_workflow_ref.as_ref(),
                "actor" => Some(&gha.actor),
                "event_name" => gha.event_name.as_ref(),
                _ => None,
            },
            (Self::Kubernetes(k8s), "namespace") => Some(&k8s.namespace),
            (Self::Kubernetes(k8s), "service_account") => Some(&k8s.service_account),
            (Self::Kubernetes(k8s), "pod") => k8s.pod.as_ref(),
            (Self::Spiffe(id), "trust_domain") => Some(&id.trust_domain),
            (Self::Spiffe(id), "path") => Some(&id.path),
            (Self::OauthClient(client), "client_id") => Some(&client.client_id),
            _ => None,
        };
        value.map(String::as_str)
    }

    /// The workload as one JSON object: `kind` and every attribute it has. What
    /// [`EXCHANGED_WORKLOAD_CLAIM`] holds.
    #[must_use]
    pub fn to_claim(&self) -> Value {
        let mut object = Map::new();
        object.insert("kind".into(), Value::from(self.kind()));
        for &name in WORKLOAD_ATTRIBUTES {
            if let Some(value) = self.attribute(name) {
                object.insert(name.into(), Value::from(value));
            }
        }
        Value::Object(object)
    }

    /// Reads back what [`Workload::to_claim`] wrote: the workload of a token Postern issued by
    /// exchange. Its attributes were checked when the original token was verified; the same
    /// required ones are required here, so a claim that lost one is refused rather than read as
    /// a workload with an empty attribute.
    ///
    /// # Errors
    /// The claim is not an object, names no known kind, or lacks a required attribute.
    pub fn from_claim(claim: &Value) -> Result<Self, AuthError> {
        let Some(attributes) = claim.as_object() else {
            return Err(invalid(EXCHANGED_WORKLOAD_CLAIM, "is not an object"));
        };
        let required = |name: &str| required_string(attributes.get(name), name);
        let optional = |name: &str| optional_string(attributes.get(name), name);
        let kind = required("kind")?;
        let preset = IssuerPreset::ALL.into_iter().find(|p| p.as_str() == kind);
        Ok(match preset {
            Some(IssuerPreset::GithubActions) => {
                Self::GithubActions(Box::new(github_actions(attributes)?))
            }
            Some(IssuerPreset::Kubernetes) => Self::Kubernetes(KubernetesServiceAccount {
                namespace: required("namespace")?,
                service_account: required("service_account")?,
                pod: optional("pod")?,
            }),
            Some(IssuerPreset::Spiffe) => Self::Spiffe(SpiffeId {
                trust_domain: required("trust_domain")?,
                path: required("path")?,
            }),
            Some(IssuerPreset::OauthClient) => Self::OauthClient(OauthClient {
                client_id: required("client_id")?,
            }),
            None => {
                return Err(invalid(
                    EXCHANGED_WORKLOAD_CLAIM,
                    "names no known workload kind",
                ));
            }
        })
    }

    /// The subject the workload itself gives, overriding the issuer's `subject_claim`: an OAuth
    /// client's id. `None` for the other presets, whose subject is `sub`.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::OauthClient(client) => Some(&client.client_id),
            Self::GithubActions(_) | Self::Kubernetes(_) | Self::Spiffe(_) => None,
        }
    }
}

fn github_actions(claims: &Map<String, Value>) -> Result<GithubActions, AuthError> {
    let required = |name: &str| required_string(claims.get(name), name);
    let optional = |name: &str| optional_string(claims.get(name), name);
    Ok(GithubActions {
        repository: required("repository")?,
        repository_id: optional("repository_id")?,
        repository_owner: optional("repository_owner")?,
        repository_owner_id: optional("repository_owner_id")?,
        git_ref: required("ref")?,
        ref_type: optional("ref_type")?,
        environment: optional("environment")?,
        workflow: required("workflow")?,
        workflow_ref: optional("workflow_ref")?,
        job_workflow_ref: optional("job_workflow_ref")?,
        actor: required("actor")?,
        event_name: optional("event_name")?,
    })
}

/// The claim Kubernetes nests its facts under.
const KUBERNETES_CLAIM: &str = "kubernetes.io";

fn kubernetes(claims: &Map<String, Value>) -> Result<KubernetesServiceAccount, AuthError> {
    let nested = match claims.get(KUBERNETES_CLAIM) {
        Some(Value::Object(nested)) => nested,
        None | Some(Value::Null) => {
            return Err(AuthError::MissingClaim(format!(
                "{KUBERNETES_CLAIM}.namespace"
            )));
        }
        Some(_) => return Err(invalid(KUBERNETES_CLAIM, "is not an object")),
    };
    // `kubernetes.io.serviceaccount.name`: the value at a path of nested objects.
    let at = |path: &[&str]| {
        let (last, parents) = path.split_last()?;
        let mut object = nested;
        for parent in parents {
            object = object.get(*parent)?.as_object()?;
        }
        object.get(*last)
    };
    let name = |path: &[&str]| format!("{KUBERNETES_CLAIM}.{}", path.join("."));
    let namespace = required_string(at(&["namespace"]), &name(&["namespace"]))?;
    let service_account = required_string(
        at(&["serviceaccount", "name"]),
        &name(&["serviceaccount", "name"]),
    )?;
    let pod = optional_string(at(&["pod", "name"]), &name(&["pod", "name"]))?;
    // The API server writes both; a token where they disagree was not minted by one.
    let expected = format!("system:serviceaccount:{namespace}:{service_account}");
    match claims.get("sub") {
        Some(Value::String(sub)) if *sub == expected => {}
        None | Some(Value::Null) => return Err(AuthError::MissingClaim("sub".into())),
        Some(_) => {
            return Err(invalid(
                "sub",
                "is not system:serviceaccount:<namespace>:<name> of the service account in \
                 'kubernetes.io'",
            ));
        }
    }
    Ok(KubernetesServiceAccount {
        namespace,
        service_account,
        pod,
    })
}

fn spiffe(config: &IssuerConfig, claims: &Map<String, Value>) -> Result<SpiffeId, AuthError> {
    let sub = required_string(claims.get("sub"), "sub")?;
    let id = parse_spiffe_id(&sub).map_err(|problem| invalid("sub", problem))?;
    // Validation requires a trust domain with this preset; without one, nothing is in it.
    let expected = config.trust_domain.as_deref().unwrap_or_default();
    if id.trust_domain != expected {
        return Err(AuthError::WorkloadMismatch(format!(
            "SPIFFE ID '{}' is not in trust domain '{}', the only one issuer '{}' is trusted for",
            echo(&sub),
            echo(expected),
            echo(&config.issuer)
        )));
    }
    Ok(id)
}

/// Splits a SPIFFE ID into trust domain and path, refusing what the SPIFFE ID standard
/// refuses, and IDs with no path (they name the trust domain, not a workload).
/// <https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md#2-spiffe-identity>
pub(crate) fn parse_spiffe_id(id: &str) -> Result<SpiffeId, &'static str> {
    const SCHEME: &str = "spiffe://";
    if id.len() > MAX_SPIFFE_ID_BYTES {
        return Err("is not a SPIFFE ID: longer than 2048 bytes");
    }
    let rest = id
        .strip_prefix(SCHEME)
        .ok_or("is not a SPIFFE ID: it does not start with spiffe://")?;
    let (trust_domain, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    if postern_config::check_trust_domain(trust_domain).is_err() {
        return Err(
            "is not a SPIFFE ID: the trust domain must be lowercase letters, digits, '.', '-' \
             and '_'",
        );
    }
    if path.is_empty() {
        return Err("names a trust domain, not a workload: the SPIFFE ID has no path");
    }
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err("is not a SPIFFE ID: its path has an empty segment or ends with '/'");
        }
        if segment == "." || segment == ".." {
            return Err("is not a SPIFFE ID: its path has a '.' or '..' segment");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(
                "is not a SPIFFE ID: its path may hold only letters, digits, '.', '-' and '_'",
            );
        }
    }
    Ok(SpiffeId {
        trust_domain: trust_domain.to_owned(),
        path: path.to_owned(),
    })
}

fn oauth_client(claims: &Map<String, Value>) -> Result<OauthClient, AuthError> {
    let client_id = optional_string(claims.get("client_id"), "client_id")?;
    let azp = optional_string(claims.get("azp"), "azp")?;
    let client_id = match (client_id, azp) {
        (Some(client_id), Some(azp)) if client_id != azp => {
            return Err(AuthError::WorkloadMismatch(format!(
                "token names two clients, client_id '{}' and azp '{}'",
                echo(&client_id),
                echo(&azp)
            )));
        }
        (Some(client_id), _) => client_id,
        (None, Some(azp)) => azp,
        (None, None) => {
            return Err(AuthError::WorkloadMismatch(
                "token has no 'client_id' claim and no 'azp' claim: it does not name a client"
                    .into(),
            ));
        }
    };
    // A token the client obtained for a user names the user in `sub`; only one the client
    // obtained for itself (client credentials) may stand for the client.
    match optional_string(claims.get("sub"), "sub")? {
        Some(sub) if sub != client_id => Err(AuthError::WorkloadMismatch(format!(
            "token's sub '{}' is not its client '{}': it names a user signed in through the \
             client, not the client itself (use the client credentials grant)",
            echo(&sub),
            echo(&client_id)
        ))),
        _ => Ok(OauthClient { client_id }),
    }
}

fn required_string(value: Option<&Value>, name: &str) -> Result<String, AuthError> {
    match value {
        Some(Value::String(s)) if s.is_empty() => Err(invalid(name, "is empty")),
        _ => optional_string(value, name)?.ok_or_else(|| AuthError::MissingClaim(name.to_owned())),
    }
}

/// A string claim; absent, `null` and `""` alike are `None` (GitHub writes `"head_ref": ""`
/// outside pull requests).
fn optional_string(value: Option<&Value>, name: &str) -> Result<Option<String>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(name, "is not a string")),
    }
}

fn invalid(claim: &str, problem: &'static str) -> AuthError {
    AuthError::InvalidClaim {
        claim: claim.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests;
