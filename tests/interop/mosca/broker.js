#!/usr/bin/env node
// MicroDrop 3's MQTT broker for tests: mosca, set up as @micropede/broker 0.0.28 sets it up
// (mosca.Server with MQTT over TCP and websockets, LevelUp persistence of retained messages,
// presence signals built from the client id), but on ports the OS picks and with in-memory
// storage (MicroDrop's is the browser's localStorage, which node does not have; both go
// through mosca's LevelUp persistence).
//
//   node broker.js [--port P] [--ws-port W]     (0, the default, lets the OS pick)
//
// Prints one JSON line {"port": P, "ws_port": W} on stdout once it accepts connections, then
// runs until killed or its standard input closes. Exit status 2 on bad usage, 1 if the broker
// cannot start. Commands on standard input, one per line:
//   drop-clients   cut every client's connection without a word, as a network failure does
//                  (retained messages stay); answers {"dropped": N}
'use strict';

const mosca = require('mosca');

function parseArgs(argv) {
  const args = { port: 0, wsPort: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || n > 65535) return null;
    if (key === '--port') args.port = n;
    else if (key === '--ws-port') args.wsPort = n;
    else return null;
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
if (!args) {
  console.error('usage: node broker.js [--port P] [--ws-port W]');
  process.exit(2);
}

const persistence = new mosca.persistence.Memory({ subscriptions: 0, packets: 0 });
const server = new mosca.Server({
  port: args.port,
  http: { port: args.wsPort, bundle: true, static: __dirname },
  logger: { level: 'fatal' },
});
persistence.wire(server);

// As @micropede/broker does: `<name>>>...` client ids announce themselves.
const presence = (client, what) => {
  const [name, , appName] = String(client.id).split('>>');
  if (!appName) return;
  server.publish({ topic: `${appName}/${name}/signal/${what}`, payload: '{}', qos: 0, retain: false });
};
server.on('clientConnected', (client) => presence(client, 'connected'));
server.on('clientDisconnected', (client) => presence(client, 'disconnected'));

server.on('ready', () => {
  const ports = server.servers.map((s) => s.address().port);
  process.stdout.write(JSON.stringify({ port: ports[0], ws_port: ports[1] }) + '\n');
});
const readline = require('readline');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'drop-clients') {
    const clients = Object.values(server.clients);
    for (const client of clients) client.connection.stream.destroy();
    process.stdout.write(JSON.stringify({ dropped: clients.length }) + '\n');
  }
}).on('close', () => process.exit(0));

server.on('error', (err) => {
  console.error(`mosca: ${err && err.message}`);
  process.exit(1);
});
