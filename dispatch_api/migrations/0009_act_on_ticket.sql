-- One ticket action in one statement (issue 20): claim the Idempotency-Key with the answer
-- already in it, apply the change only if the ticket is still at the version the caller
-- read (compare-and-set on last_seq), and append the timeline event. A plain statement
-- outside BEGIN is its own transaction, so all of it commits or none of it does.
--
-- Outcomes: 'applied'; 'stored' with the answer already under the key (a re-send, or a
-- different request reusing the key: the caller compares fingerprints); 'stale' when the
-- ticket changed since it was read (nothing is written: the caller reads again). No row
-- at all: the key was purged between the conflict and the read; the caller reads again.
-- Waiting for the key's first user past lock_timeout raises SQLSTATE DB409 (request in
-- progress), distinct from waiting for the ticket's row lock (55P03, ticket busy).
CREATE FUNCTION act_on_ticket(
    p_principal text, p_key text, p_fingerprint bytea, p_method text, p_path text,
    p_status integer, p_body bytea, p_ticket uuid, p_state_changed boolean,
    p_state text, p_priority text, p_customer_name text, p_contact_phone text,
    p_contact_email text, p_site_address text, p_incident_type text, p_description text,
    p_technician_id text, p_window_start timestamptz, p_window_end timestamptz,
    p_state_before_hold text, p_hold_cause text, p_response_due_at timestamptz,
    p_resolution_due_at timestamptz, p_sla_paused_since timestamptz,
    p_sla_paused_s double precision, p_provider_hold_since timestamptz,
    p_provider_hold_s double precision, p_responded_at timestamptz, p_resolved_at timestamptz,
    p_seq integer, p_at timestamptz, p_type text, p_from_state text, p_to_state text,
    p_reason text, p_actor_type text, p_actor_id text, p_role text, p_tool_name text,
    p_request_id text, p_correlation_id text, p_trace_id text, p_details jsonb
) RETURNS TABLE (
    outcome text, stored_fingerprint bytea, stored_method text, stored_path text,
    stored_status integer, stored_body bytea
) LANGUAGE plpgsql AS $$
DECLARE
    claimed integer;
BEGIN
    BEGIN
        INSERT INTO idempotency_keys (principal_id, key, fingerprint, method, path,
            status_code, response_body, created_at)
        VALUES (p_principal, p_key, p_fingerprint, p_method, p_path, p_status, p_body, p_at)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS claimed = ROW_COUNT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'a request with this Idempotency-Key is still being processed'
            USING ERRCODE = 'DB409';
    END;
    IF claimed = 0 THEN
        RETURN QUERY SELECT 'stored'::text, k.fingerprint, k.method, k.path, k.status_code,
            k.response_body FROM idempotency_keys k
            WHERE k.principal_id = p_principal AND k.key = p_key;
        RETURN;
    END IF;
    UPDATE tickets t SET (state, priority, customer_name, contact_phone, contact_email,
        site_address, incident_type, description, technician_id, window_start, window_end,
        state_before_hold, hold_cause, response_due_at, resolution_due_at, sla_paused_since,
        sla_paused_s, provider_hold_since, provider_hold_s, responded_at, resolved_at)
        = (p_state, p_priority, p_customer_name, p_contact_phone, p_contact_email,
        p_site_address, p_incident_type, p_description, p_technician_id, p_window_start,
        p_window_end, p_state_before_hold, p_hold_cause, p_response_due_at,
        p_resolution_due_at, p_sla_paused_since, p_sla_paused_s, p_provider_hold_since,
        p_provider_hold_s, p_responded_at, p_resolved_at),
        updated_at = p_at, last_seq = p_seq,
        state_entered_at = CASE WHEN p_state_changed THEN p_at ELSE t.state_entered_at END
    WHERE t.id = p_ticket AND t.last_seq = p_seq - 1;
    IF NOT FOUND THEN
        -- Our own uncommitted claim: taking it back leaves the key as it was.
        DELETE FROM idempotency_keys k WHERE k.principal_id = p_principal AND k.key = p_key;
        RETURN QUERY SELECT 'stale'::text, NULL::bytea, NULL::text, NULL::text,
            NULL::integer, NULL::bytea;
        RETURN;
    END IF;
    INSERT INTO timeline_events (ticket_id, seq, at, type, from_state, to_state, reason,
        actor_type, actor_id, role, tool_name, request_id, correlation_id, trace_id, details)
    VALUES (p_ticket, p_seq, p_at, p_type, p_from_state, p_to_state, p_reason, p_actor_type,
        p_actor_id, p_role, p_tool_name, p_request_id, p_correlation_id, p_trace_id,
        p_details);
    RETURN QUERY SELECT 'applied'::text, NULL::bytea, NULL::text, NULL::text,
        NULL::integer, NULL::bytea;
END;
$$;
