#!/usr/bin/env node
// Drives the dropbot plugin with MicroDrop 3's own client library, @micropede/client 0.0.39,
// the way MicroDrop's UI and step runner use it, and prints a JSON summary on stdout.
//
//   node drive.js --host 127.0.0.1 --port 1884 --name dropbot
//
// Exit status 0 when every check passed, 1 otherwise (the summary says which), 2 on bad usage.
//
// Quirks of the library (read from its source, they shape this script):
// - MicropedeAsync is not exported by the package's main file; MicroDrop itself requires
//   '@micropede/client/src/async.js' and '@micropede/client/src/client.js'.
// - Under node it speaks MQTT over TCP (mqtt://host:port, mqtt.js 2.x), default port 1883.
// - Every request reconnects: `reset()` force-closes the previous connection (no DISCONNECT)
//   and connects with a fresh id `micropede-async-<uuid1>-<uuid4>>>unknown>>microdrop>><uuid>`;
//   the request's __head__ carries `plugin_name` (that same name for every request of one
//   MicropedeAsync) and `version`, not `plugin_version`.
// - It subscribes to the notify topic and publishes the request without waiting for the
//   SUBACK; the broker keeps the order, so the reply is not missed.
// - A reply whose status is not "success" rejects with [label, ...response] (flattened).
// - The default timeout is 5 s; the step runner passes -1 (none) for `execute` and 500 ms for
//   `get-subscriptions`; each connect leaves a 5 s timer behind, so this script ends with
//   process.exit rather than waiting for the event loop to drain.
// - A MicropedeClient subclass with a listen() method is a "plugin": on connect it publishes
//   its own retained schema/version, answers ping etc., and under node calls process.exit()
//   when its connection closes (overridden below); its name comes from the class name.
'use strict';

const MicropedeAsync = require('@micropede/client/src/async.js');
const { MicropedeClient } = require('@micropede/client/src/client.js');

const APP = 'microdrop';
const WATCHED = ['voltage', 'frequency', 'status', 'hv-output-enabled', 'schema'];

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 1884, name: 'dropbot', deadlineMs: 45000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) return null;
    if (key === '--host') args.host = value;
    else if (key === '--port') args.port = Number(value);
    else if (key === '--name') args.name = value;
    else if (key === '--deadline-ms') args.deadlineMs = Number(value);
    else return null;
  }
  return Number.isInteger(args.port) ? args : null;
}

/// A UI-side plugin that mirrors the dropbot's retained state, as MicroDrop's panels do.
class DropbotStateWatcher extends MicropedeClient {
  listen() {
    this.seen = this.seen || {};
    for (const prop of WATCHED) {
      this.onStateMsg(this.target, prop, (payload) => {
        (this.seen[prop] = this.seen[prop] || []).push(payload);
        this.trigger(`state:${prop}`, payload);
      });
    }
  }

  exit() {
    // The library would end the whole process when this connection closes.
  }

  /// Resolves with the first value of `prop` (seen already or arriving) that `accept`s.
  waitFor(prop, accept, ms) {
    const now = (this.seen && this.seen[prop]) || [];
    const hit = now.find(accept);
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(`state:${prop}`, onState);
        reject(new Error(`no state ${prop} matching within ${ms} ms; saw ${JSON.stringify(now)}`));
      }, ms);
      const onState = (payload) => {
        if (!accept(payload)) return;
        clearTimeout(timer);
        this.off(`state:${prop}`, onState);
        resolve(payload);
      };
      this.on(`state:${prop}`, onState);
    });
  }
}

function describe(err) {
  if (err instanceof Error) return err.message;
  return err;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args) {
    console.error('usage: node drive.js [--host H] [--port P] [--name NAME] [--deadline-ms MS]');
    process.exit(2);
  }
  const { host, port, name } = args;
  const summary = { library: '@micropede/client', version: require('@micropede/client/package.json').version, plugin: name, steps: {}, checks: [] };
  const finish = (code) => {
    summary.ok = code === 0;
    process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(code));
  };
  setTimeout(() => {
    summary.checks.push({ check: 'deadline', ok: false, why: `not done within ${args.deadlineMs} ms` });
    finish(1);
  }, args.deadlineMs);

  const check = (what, ok, why) => summary.checks.push({ check: what, ok: Boolean(ok), why: ok ? undefined : why });

  // Runs one library call; records how it ended.
  const step = async (label, call) => {
    const started = Date.now();
    try {
      const value = await call();
      summary.steps[label] = { outcome: 'resolved', value, ms: Date.now() - started };
    } catch (err) {
      summary.steps[label] = { outcome: 'rejected', error: describe(err), ms: Date.now() - started };
    }
    return summary.steps[label];
  };
  const resolved = (label, s) => check(label, s.outcome === 'resolved', JSON.stringify(s));

  // The watcher: a UI plugin subscribed to our retained state.
  const watcher = new DropbotStateWatcher(APP, host, port);
  watcher.target = name;
  const firstVoltage = await step('watch_voltage', () => watcher.waitFor('voltage', (v) => typeof v === 'number', 10000));
  resolved('watcher receives retained voltage', firstVoltage);

  // One request helper for the UI's calls.
  const microdrop = new MicropedeAsync(APP, host, port);

  const ping = await step('ping', () => microdrop.triggerPlugin(name, 'ping'));
  check('ping answers pong', ping.outcome === 'resolved' && ping.value.status === 'success' && ping.value.response === 'pong', JSON.stringify(ping));

  // The step runner: a fresh helper per plugin, 500 ms, keeps plugins whose subs mention execute.
  const subs = await step('get_subscriptions', () => new MicropedeAsync(APP, host, port).getSubscriptions(name, 500));
  const list = Array.isArray(subs.value) ? subs.value : [];
  check('get-subscriptions lists execute (step runner filter)', list.some((s) => s.includes('execute')), JSON.stringify(subs));
  check('get-subscriptions lists the voltage put', list.includes(`${APP}/put/${name}/voltage`), JSON.stringify(subs));

  const schema = await step('get_schema', () => microdrop.getSchema(name));
  check('schema has voltage', schema.outcome === 'resolved' && schema.value && schema.value.properties && schema.value.properties.voltage, JSON.stringify(schema));

  const put = await step('put_voltage', () => microdrop.putPlugin(name, 'voltage', 90));
  check('put voltage 90 succeeds with 90', put.outcome === 'resolved' && put.value.status === 'success' && put.value.response === 90, JSON.stringify(put));
  const seen90 = await step('watch_voltage_90', () => watcher.waitFor('voltage', (v) => v === 90, 5000));
  resolved('watcher sees voltage 90', seen90);
  const got = await step('get_state_voltage', () => microdrop.getState(name, 'voltage'));
  check('getState voltage is 90', got.outcome === 'resolved' && got.value === 90, JSON.stringify(got));

  const execute = await step('execute', () => new MicropedeAsync(APP, host, port).triggerPlugin(name, 'execute', {}, -1));
  check('execute succeeds', execute.outcome === 'resolved' && execute.value.status === 'success', JSON.stringify(execute));

  const bad = await step('put_voltage_10000', () => microdrop.putPlugin(name, 'voltage', 10000));
  const badText = JSON.stringify(bad.error || '');
  check('put voltage 10000 rejects with our message', bad.outcome === 'rejected' && badText.includes('voltage') && badText.includes('allowed'), JSON.stringify(bad));
  const after = await step('get_state_voltage_after_bad_put', () => microdrop.getState(name, 'voltage'));
  check('a refused put leaves voltage at 90', after.outcome === 'resolved' && after.value === 90, JSON.stringify(after));

  // A step saved while our voltage was per step writes it to our state topic on load
  // (dangerouslySetState, no put): not a step's setting any more (the electrodes model's is),
  // so the board keeps its voltage; the next change of ours puts the broker right.
  const stepClient = new MicropedeClient(APP, host, port, `stepClient-0-${Math.floor(Math.random() * 10000)}`);
  await Promise.race([new Promise((res) => stepClient.on('connected', res)), new Promise((res) => setTimeout(res, 2000))]);
  await stepClient.sendMessage(`${APP}/${name}/state/voltage`, 120, true, 1);
  const executed = await step('execute_after_write', () => new MicropedeAsync(APP, host, port).triggerPlugin(name, 'execute', {}, -1));
  check('a write to our voltage state does not change the board', executed.outcome === 'resolved' && executed.value.response.voltage === 90, JSON.stringify(executed));
  await stepClient.disconnectClient();
  const reput = await step('put_voltage_after_write', () => microdrop.putPlugin(name, 'voltage', 95));
  resolved('put voltage 95 after the write', reput);
  const truth = await step('get_state_voltage_after_reput', () => microdrop.getState(name, 'voltage'));
  check('the broker holds the truth again', truth.outcome === 'resolved' && truth.value === 95, JSON.stringify(truth));

  summary.watched = watcher.seen;
  await watcher.disconnectClient();
  finish(summary.checks.every((c) => c.ok) ? 0 : 1);
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, fatal: String(describe(err)) }) + '\n', () => process.exit(1));
});
