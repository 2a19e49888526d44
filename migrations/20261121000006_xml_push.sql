-- MiSmart XML push (`docs/xml-push.md`): who may push, and where each pushed meter is stored.

-- Source addresses (single hosts or networks) a gateway's XML push may come from. A TCP
-- connection from an address that matches no gateway is refused.
CREATE TABLE gateway_xml_sources (
    gateway_id  BIGINT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    source      CIDR NOT NULL,
    PRIMARY KEY (gateway_id, source)
);

-- Meters (by `controlUnit`, the meter serial) a gateway may push XML for, pinned to the device
-- their documents are stored on: an existing meter of the gateway with the same serial (one
-- learned from MQTT) when registered, else a device on port 'xml' with the first free slot.
-- Pinned once, so a redelivered or late document always lands on the same device.
CREATE TABLE xml_meters (
    gateway_id  BIGINT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    serial      TEXT NOT NULL CHECK (length(serial) BETWEEN 1 AND 64),
    port        TEXT NOT NULL CHECK (port IN ('ir', 'rs485', 'xml')),
    slot        SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 255),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, serial),
    UNIQUE (gateway_id, port, slot)
);
