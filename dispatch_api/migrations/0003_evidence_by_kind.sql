-- Evidence counted per kind and tag without reading the items: what the evidence rules and
-- the per-ticket limit decide on, and what ticket views show instead of every item.
CREATE INDEX evidence_by_ticket_kind ON evidence (ticket_id, kind, tag);
