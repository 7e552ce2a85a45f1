#!/usr/bin/env node
// A MicroDrop 3 process plugin written with MicroDrop's own client library (@micropede/client
// 0.0.39) that does nothing but answer: the yardstick of the plugin round-trip benchmark.
//
//   node echo_plugin.js --host 127.0.0.1 --port 1884 --name js-echo --model electrodes-model
//
// - A put of `voltage` is answered on notify with the value it carried (as the DropBot plugin
//   answers with the value the board took).
// - Every `<model>/state/active-electrodes` update is published back as its retained
//   `state/actuated-channels` (as the DropBot plugin publishes what the board switched on).
// Prints "ready" on stdout once it listens; runs until killed or its standard input closes.
'use strict';

const { MicropedeClient } = require('@micropede/client/src/client.js');

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 1884, name: 'js-echo', model: 'electrodes-model' };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) return null;
    if (key === '--host') args.host = value;
    else if (key === '--port') args.port = Number(value);
    else if (key === '--name') args.name = value;
    else if (key === '--model') args.model = value;
    else return null;
  }
  return Number.isInteger(args.port) ? args : null;
}

class EchoPlugin extends MicropedeClient {
  async listen() {
    await this.onPutMsg('voltage', (payload) => this.notifySender(payload, payload.voltage, 'voltage'));
    await this.onStateMsg(this.model, 'active-electrodes', (payload) => this.setState('actuated-channels', payload));
    process.stdout.write('ready\n');
  }

  exit() {
    // The library would end the process when the connection closes; the bench ends it.
  }
}

const args = parseArgs(process.argv.slice(2));
if (!args) {
  console.error('usage: node echo_plugin.js [--host H] [--port P] [--name NAME] [--model MODEL]');
  process.exit(2);
}
EchoPlugin.prototype.model = args.model;
new EchoPlugin('microdrop', args.host, args.port, args.name);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
