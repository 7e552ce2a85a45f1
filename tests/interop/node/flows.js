#!/usr/bin/env node
// MicroDrop 3's own flows around the DropBot plugin, replayed with MicroDrop's client library
// (@micropede/client 0.0.39) the way MicroDrop's step UI, step runner and models drive it
// (sci-bots/microdrop-3 at 4ccda2b: packages/step-ui-plugin/src/step-mixins.js,
// packages/jsoneditor-mixins/src/jsoneditor-mixins.js, packages/models/ElectrodesModel.js and
// RoutesModel.js). Prints one JSON summary line on stdout; exit status 0 when every check passed.
//
//   node flows.js --port P --scenario NAME [--frames JSON]
//
// Scenarios:
//   steps      create two steps as the step UI does, load them in both plugin orders, run them,
//              edit a step's voltage in the electrodes model and load it again
//   routes     route frames: electrodes-model active-electrodes updates at the routes model's
//              rate (--frames: a JSON array of id arrays); records every actuated-channels state
//   unknown    execute a step whose electrodes the device partly lacks
//   restart    load a step, print {"loaded": true}, wait for a line on standard input (the test
//              restarts the plugin meanwhile), then check the loaded step was left as it was
//
// The browser-only parts of MicroDrop (the electrodes model needs `window`) are stood in for by
// a client named `electrodes-model` that publishes its retained state exactly as
// ElectrodesModel.putActiveElectrodes/putVoltage/putFrequency do (setState, bare values).
'use strict';

const _ = require('lodash');
const Ajv = require('ajv');
const MicropedeAsync = require('@micropede/client/src/async.js');
const { MicropedeClient } = require('@micropede/client/src/client.js');

const APP = 'microdrop';
const DROPBOT = 'dropbot';

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 1884, scenario: null, frames: '[]', deadlineMs: 60000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) return null;
    if (key === '--host') args.host = value;
    else if (key === '--port') args.port = Number(value);
    else if (key === '--scenario') args.scenario = value;
    else if (key === '--frames') args.frames = value;
    else if (key === '--deadline-ms') args.deadlineMs = Number(value);
    else return null;
  }
  return Number.isInteger(args.port) && args.scenario ? args : null;
}

const args = parseArgs(process.argv.slice(2));
if (!args) {
  console.error('usage: node flows.js --port P --scenario steps|routes|unknown|restart [--frames JSON]');
  process.exit(2);
}
const { host, port } = args;
const summary = { scenario: args.scenario, checks: [], observed: {} };
const check = (what, ok, detail) => summary.checks.push({ check: what, ok: Boolean(ok), detail: ok ? undefined : detail });
const finish = (code) => {
  summary.ok = code === 0;
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(code));
};
setTimeout(() => { check('deadline', false, `not done within ${args.deadlineMs} ms`); finish(1); }, args.deadlineMs);
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

/// A plugin-like client that never ends the process when its connection closes.
class Quiet extends MicropedeClient {
  exit() {}
}

/// Stands in for MicroDrop's electrodes model: its retained state, published as it does.
class ElectrodesModel extends Quiet {
  listen() {}
}

function connected(client) {
  return Promise.race([
    new Promise((res) => client.on('connected', res)),
    sleep(5000).then(() => { throw new Error(`${client.name} did not connect`); }),
  ]);
}

/// Watches our `state/<prop>`, keeping every value seen.
class DropbotWatcher extends Quiet {
  async listen() {
    this.seen = {};
    await Promise.all(['voltage', 'frequency', 'actuated-channels', 'wait-for-board'].map((prop) =>
      this.onStateMsg(DROPBOT, prop, (payload) => {
        (this.seen[prop] = this.seen[prop] || []).push(payload);
        this.trigger(`state:${prop}`, payload);
      })));
    this.listening = true;
    this.trigger('listening');
  }

  /// Resolves once its subscriptions are in place (the library says "connected" before).
  ready() {
    if (this.listening) return Promise.resolve();
    return new Promise((res) => this.once('listening', res));
  }

  waitFor(prop, accept, ms = 10000) {
    const hit = (this.seen[prop] || []).slice(-1).find(accept);
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(`state:${prop}`, on);
        reject(new Error(`no ${prop} matching within ${ms} ms; saw ${JSON.stringify(this.seen[prop])}`));
      }, ms);
      const on = (payload) => {
        if (!accept(payload)) return;
        clearTimeout(timer);
        this.off(`state:${prop}`, on);
        resolve(payload);
      };
      this.on(`state:${prop}`, on);
    });
  }
}

/// StepMixins.getStateForPlugin + createStep for the dropbot: the puttable properties from
/// get-subscriptions (300 ms), their retained values, the schema's defaults (Ajv useDefaults on
/// the schema as jsoneditor-mixins extends it), then everything `per_step: false` dropped.
async function createDropbotStep(microdrop) {
  const subs = await new MicropedeAsync(APP, host, port).getSubscriptions(DROPBOT, 300);
  const puttable = _.compact(_.map(subs, (s) => (_.includes(s, '/put/') ? s.split(`${APP}/put/${DROPBOT}/`)[1] : undefined)));
  const state = {};
  for (const prop of puttable) {
    try {
      // MicroDrop reads the broker's store over HTTP; a missing value is undefined at once.
      const v = await microdrop.getState(DROPBOT, prop, 300);
      if (v !== undefined && v !== null) state[prop] = v;
    } catch (e) { /* nothing stored */ }
  }
  const schema = await microdrop.getSchema(DROPBOT);
  _.each(schema.properties, (v) => {
    if (v.type === undefined || _.includes(v.type, 'string')) return;
    v.type = _.compact(_.uniq(_.isArray(v.type) ? [...v.type, 'string'] : [v.type, 'string']));
    v.pattern = v.pattern || '^[$]';
  });
  new Ajv({ useDefaults: true }).compile(schema)(state);
  for (const k of _.keys(state)) {
    if ((k.slice(0, 2) === '__' && k.slice(-2) === '__') || _.get(schema, ['properties', k, 'per_step']) === false) delete state[k];
  }
  return state;
}

/// StepMixins.loadStatesForStep, with the plugins in `order`: each key of the step is written
/// to the plugin's state topic (dangerouslySetState, no put), then subscribed to; while the step
/// stays loaded every later message on those topics is written back into the step.
async function loadStep(step, order, stepUi) {
  if (stepUi.stepClient) await stepUi.stepClient.disconnectClient();
  const stepClient = new Quiet(APP, host, port, `stepClient-0-${Math.floor(Math.random() * 10000)}`);
  await connected(stepClient);
  stepUi.stepClient = stepClient;
  stepUi.loaded = step;
  for (const p of order) {
    for (const [k, v] of Object.entries(step[p] || {})) {
      // dangerouslySetState publishes with QoS 0 from one connection and the step client
      // subscribes from another: on mosca the subscription can then be handed the value stored
      // before (MicroDrop's own race, not the plugin's). QoS 1 waits until it is stored.
      await stepUi.sendMessage(`${APP}/${p}/state/${k}`, v, true, 1);
      await new Promise(async (res) => {
        await stepClient.onStateMsg(p, k, (payload) => {
          if (stepUi.loaded === step) _.set(step, [p, k], payload);
          res();
        });
      });
    }
  }
}

/// The step runner: `execute` to the dropbot, no timeout (the electrodes model's execute only
/// waits its min-duration; the stand-in has none).
function execute() {
  return new MicropedeAsync(APP, host, port).triggerPlugin(DROPBOT, 'execute', {}, -1);
}

async function steps(ctx) {
  const { microdrop, model, watcher, stepUi } = ctx;
  await model.setState('voltage', '100 V');
  await model.setState('frequency', '1000 Hz');
  await model.setState('active-electrodes', []);
  const dropbotPart = await createDropbotStep(microdrop);
  summary.observed.dropbot_step = dropbotPart;
  check('a step stores only the dropbot\'s per-step property', _.isEqual(dropbotPart, { 'wait-for-board': true }), JSON.stringify(dropbotPart));
  const mk = (ids, v, f) => ({ 'electrodes-model': { 'active-electrodes': ids, voltage: v, frequency: f }, [DROPBOT]: _.clone(dropbotPart) });
  const a = mk(['electrode030'], '120 V', '5000 Hz');
  const b = mk(['electrode031'], '90 V', '2000 Hz');
  const saved = _.cloneDeep([a, b]);
  const runs = [];
  for (const order of [[DROPBOT, 'electrodes-model'], ['electrodes-model', DROPBOT]]) {
    for (const [step, v, f] of [[a, 120, 5000], [b, 90, 2000]]) {
      await loadStep(step, order, stepUi);
      const reply = await execute();
      runs.push({ order, voltage: reply.response.voltage, frequency: reply.response.frequency, channels: reply.response.channels });
      check(`step ${v} V loaded ${order.join(' then ')} runs at ${v} V, ${f} Hz`,
        reply.status === 'success' && reply.response.voltage === v && reply.response.frequency === f, JSON.stringify(reply));
      await watcher.waitFor('voltage', (x) => x === v);
    }
  }
  summary.observed.runs = runs;
  check('loading and running the steps left them as saved', _.isEqual([a, b], saved), JSON.stringify([a, b]));
  // The user edits the loaded step's voltage in the step editor's electrodes-model tab.
  await model.setState('voltage', '95 V');
  await watcher.waitFor('voltage', (x) => x === 95);
  check('the edit is recorded in the loaded step', b['electrodes-model'].voltage === '95 V', JSON.stringify(b));
  await loadStep(a, [DROPBOT, 'electrodes-model'], stepUi);
  await loadStep(b, ['electrodes-model', DROPBOT], stepUi);
  const reply = await execute();
  check('the edit survives loading the step again', reply.response.voltage === 95, JSON.stringify(reply));
  summary.observed.steps = [a, b];
}

async function routes(ctx) {
  const { model, watcher } = ctx;
  const frames = JSON.parse(args.frames);
  // RoutesModel: wait one interval (T = 0.1 s, one route), then put the frame's electrodes.
  const sent = [];
  for (const frame of frames) {
    await sleep(100);
    await model.setState('active-electrodes', frame);
    sent.push({ frame, at: Date.now() });
  }
  await sleep(500);
  summary.observed.frames = sent;
  summary.observed.actuated = watcher.seen['actuated-channels'] || [];
}

async function unknown(ctx) {
  const { model, watcher, stepUi } = ctx;
  await model.setState('active-electrodes', ['electrode030']);
  const first = await watcher.waitFor('actuated-channels', (c) => c.length > 0);
  const step = { 'electrodes-model': { 'active-electrodes': ['electrode031', 'electrode999'] }, [DROPBOT]: { 'wait-for-board': true } };
  await loadStep(step, ['electrodes-model', DROPBOT], stepUi);
  const reply = await execute();
  summary.observed.execute = reply;
  check('execute succeeds', reply.status === 'success', JSON.stringify(reply));
  check('execute warns about the missing electrode', JSON.stringify(reply.response.warning || '').includes('electrode999'), JSON.stringify(reply));
  summary.observed.first = first;
  summary.observed.actuated = await watcher.waitFor('actuated-channels', (c) => !_.isEqual(c, first));
}

async function restart(ctx) {
  const { model, watcher, stepUi } = ctx;
  await model.setState('voltage', '100 V');
  await model.setState('frequency', '1000 Hz');
  const step = { 'electrodes-model': { 'active-electrodes': ['electrode030'], voltage: '110 V', frequency: '3000 Hz' }, [DROPBOT]: { 'wait-for-board': true } };
  const saved = _.cloneDeep(step);
  await loadStep(step, [DROPBOT, 'electrodes-model'], stepUi);
  const before = await execute();
  check('the step runs before the restart', before.status === 'success' && before.response.voltage === 110, JSON.stringify(before));
  process.stdout.write(JSON.stringify({ loaded: true }) + '\n');
  await new Promise((res) => process.stdin.once('data', res));
  // The restarted plugin published its state; whatever reached the loaded step was written in.
  await watcher.waitFor('voltage', (v) => v === 110);
  check('a plugin restart leaves the loaded step as saved', _.isEqual(step, saved), JSON.stringify(step));
  const after = await execute();
  check('the step runs after the restart', after.status === 'success' && after.response.voltage === 110 && after.response.frequency === 3000, JSON.stringify(after));
  summary.observed.after = after;
}

async function main() {
  const model = new ElectrodesModel(APP, host, port, 'electrodes-model');
  const watcher = new DropbotWatcher(APP, host, port, 'dropbot-watcher');
  const stepUi = new Quiet(APP, host, port, 'step-ui-plugin');
  await Promise.all([connected(model), connected(watcher), connected(stepUi)]);
  await watcher.ready();
  const microdrop = new MicropedeAsync(APP, host, port);
  const ctx = { microdrop, model, watcher, stepUi };
  const scenarios = { steps, routes, unknown, restart };
  const run = scenarios[args.scenario];
  if (!run) {
    check('scenario', false, `unknown scenario ${args.scenario}`);
    return finish(2);
  }
  try {
    await run(ctx);
  } catch (e) {
    check('no exception', false, String(e && e.stack ? e.stack : JSON.stringify(e)));
  }
  finish(summary.checks.every((c) => c.ok) ? 0 : 1);
}

main().catch((e) => { check('fatal', false, String(e)); finish(1); });
