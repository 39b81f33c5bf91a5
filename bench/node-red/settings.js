// Node-RED settings for the W1 benchmark (bench/node-red/serve.sh passes this file).
// Runtime only: no editor, no admin API, no projects; HTTP on 127.0.0.1:$SUT_PORT; the flow is
// bench/node-red/flow.json (read-only here: the user dir is a fresh temp dir per run).
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.SUT_PORT || "9200", 10),
    flowFile: process.env.NODE_RED_FLOW_FILE,
    flowFilePretty: true,
    credentialSecret: false,
    httpAdminRoot: false,          // no editor, no admin API
    httpNodeRoot: "/",
    httpStatic: false,
    disableEditor: true,
    functionExternalModules: true, // the function node's `libs` (crypto is a Node built-in)
    functionTimeout: 0,
    apiMaxLength: "1mb",
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    telemetry: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    logging: { console: { level: process.env.NODE_RED_LOG_LEVEL || "warn", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
};
