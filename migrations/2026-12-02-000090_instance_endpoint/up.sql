-- The in-cluster URL of an instance (the ToolHive operator's status.url, or the native
-- Service's DNS name), kept with the rest of the observed state.
ALTER TABLE instances ADD COLUMN endpoint text;
