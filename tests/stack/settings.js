// Node-RED settings for the stack bench (tests/benches/stack.rs): the flow runs as a user would
// run it headless. No editor and no admin API (nothing listens but the MQTT client), nothing
// installed at run time: `pg` comes from the user directory's package.json (`npm ci`), which is
// how functionExternalModules finds it. Everything that differs per run comes from the
// environment: STACK_FLOW_FILE, STACK_MQTT_PORT, STACK_MQTT_CLIENT_ID and libpq's PGHOST,
// PGPORT, PGUSER, PGDATABASE (read by `pg`).
module.exports = {
    flowFile: process.env.STACK_FLOW_FILE,
    credentialSecret: false,
    uiHost: "127.0.0.1",
    uiPort: 0,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    functionExternalModules: true,
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false },
        modules: { allowInstall: false },
    },
    contextStorage: { default: { module: "memory" } },
    logging: { console: { level: "info", metrics: false, audit: false } },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    telemetry: { enabled: false },
};
