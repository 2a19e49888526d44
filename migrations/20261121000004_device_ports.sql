-- Devices that are not in an SG's IR or RS485 settings slots: meters and relays polled over
-- Modbus TCP behind an RS485/IP converter (port 'modbus', slot = Modbus unit id 1..247), and
-- meters known from MiSmart XML pushes only (port 'xml').
ALTER TABLE devices
    DROP CONSTRAINT devices_port_check,
    ADD CONSTRAINT devices_port_check CHECK (port IN ('ir', 'rs485', 'modbus', 'xml')),
    DROP CONSTRAINT devices_slot_check,
    ADD CONSTRAINT devices_slot_check CHECK (slot BETWEEN 0 AND 255);
