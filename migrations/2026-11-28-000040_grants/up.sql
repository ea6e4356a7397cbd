-- Namespace grants: which namespaces a user (token subject) may see and, with the deployer role,
-- operate in. Managed by admins through grantNamespace / revokeNamespace.
CREATE TABLE namespace_grants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subject     text NOT NULL,
    namespace   text NOT NULL,
    granted_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT namespace_grants_subject_len CHECK (char_length(subject) BETWEEN 1 AND 256),
    CONSTRAINT namespace_grants_namespace_dns CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    CONSTRAINT namespace_grants_unique UNIQUE (subject, namespace)
);
CREATE INDEX namespace_grants_namespace_idx ON namespace_grants (namespace);



