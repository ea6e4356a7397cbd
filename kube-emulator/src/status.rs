//! `meta/v1 Status` error bodies, shaped like a real apiserver's.

use crate::resources::ResourceDef;
use serde_json::{Value, json};

/// An API error that renders as a Status body (or plain text for unknown paths).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
    /// Plain text body instead of Status JSON (`404 page not found`).
    pub plain: Option<String>,
}

impl ApiError {
    pub fn status(
        code: u16,
        reason: &str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message.into(),
            "reason": reason,
            "code": code,
        });
        if let Some(d) = details {
            body["details"] = d;
        }
        if reason.is_empty() {
            body.as_object_mut().unwrap().remove("reason");
        }
        ApiError {
            code,
            body,
            plain: None,
        }
    }

    pub fn page_not_found() -> Self {
        ApiError {
            code: 404,
            body: Value::Null,
            plain: Some("404 page not found\n".into()),
        }
    }

    fn details(def: &ResourceDef, name: &str) -> Value {
        let mut d = json!({ "name": name, "kind": def.plural });
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        d
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::status(
            404,
            "NotFound",
            format!("{} \"{}\" not found", def.qualified(), name),
            Some(Self::details(def, name)),
        )
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::status(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            Some(json!({"name": ns, "kind": "namespaces"})),
        )
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::status(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", def.qualified(), name),
            Some(Self::details(def, name)),
        )
    }

    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self::status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                def.qualified(),
                name
            ),
            Some(Self::details(def, name)),
        )
    }

    pub fn conflict_msg(def: &ResourceDef, name: &str, msg: &str) -> Self {
        Self::status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                def.qualified(),
                name,
                msg
            ),
            Some(Self::details(def, name)),
        )
    }

    /// 422 Invalid with `(field, message)` causes.
    pub fn invalid(def: &ResourceDef, name: &str, causes: &[(String, String)]) -> Self {
        let msgs: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = if msgs.len() == 1 {
            format!(
                "{} \"{}\" is invalid: {}",
                def.qualified_kind(),
                name,
                msgs[0]
            )
        } else {
            format!(
                "{} \"{}\" is invalid: [{}]",
                def.qualified_kind(),
                name,
                msgs.join(", ")
            )
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        let mut d = json!({"name": name, "kind": def.kind, "causes": causes});
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        Self::status(422, "Invalid", message, Some(d))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::status(400, "BadRequest", message, None)
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::status(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {ct}"
            ),
            None,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            None,
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::status(410, "Expired", message, None)
    }

    pub fn unauthorized() -> Self {
        Self::status(401, "Unauthorized", "Unauthorized", None)
    }

    pub fn forbidden(
        user: &str,
        verb: &str,
        def: &ResourceDef,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let mut msg = format!("{} ", def.qualified());
        if let Some(n) = name {
            msg.push_str(&format!("\"{n}\" "));
        }
        msg.push_str(&format!(
            "is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\"",
            def.plural, def.group
        ));
        match ns {
            Some(ns) => msg.push_str(&format!(" in the namespace \"{ns}\"")),
            None => msg.push_str(" at the cluster scope"),
        }
        let mut d = json!({"kind": def.plural});
        if let Some(n) = name {
            d["name"] = json!(n);
        }
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        Self::status(403, "Forbidden", msg, Some(d))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::status(500, "InternalError", message, None)
    }
}

/// A `Status` with `status: Success` (delete responses).
pub fn success(def: &ResourceDef, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": def.plural, "uid": uid});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
