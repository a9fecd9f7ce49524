// Drives artkeep's Kubo RPC subset with npm kubo-rpc-client, as a JS app pushing to Kubo would.
//
// Request (JSON on stdin):
//   {"url": "http://127.0.0.1:PORT", "token": "...", "cars": ["/abs/a.car", ...],
//    "block_hex": "...", "dag_pb_hex": "...", "absent": "<a CID never stored>"}
// Answer (stdout): one JSON object with what each call returned (CIDs as strings, bytes as hex),
// then nothing else. Errors: stderr, exit code 2. Talks to the given loopback URL only.

import { readFileSync } from 'node:fs'
import { create } from 'kubo-rpc-client'

const CLIENT_VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/kubo-rpc-client/package.json', import.meta.url), 'utf8')
).version

async function all (iterable) {
  const out = []
  for await (const item of iterable) out.push(item)
  return out
}

const hex = (bytes) => Buffer.from(bytes).toString('hex')
const pinEntry = ({ type, cid, name }) => ({ type, cid: cid.toString(), name: name ?? null })

async function main () {
  const request = JSON.parse(readFileSync(0, 'utf8'))
  const client = create({ url: request.url, headers: { Authorization: `Bearer ${request.token}` } })
  const answer = { client: `kubo-rpc-client@${CLIENT_VERSION}` }

  // One CAR per multipart part, in one request: [[bytes of a], [bytes of b], ...]
  const cars = request.cars.map((path) => [readFileSync(path)])
  answer.imported = (await all(client.dag.import(cars))).map(({ root }) => ({
    cid: root.cid.toString(), pinErrorMsg: root.pinErrorMsg
  }))

  const block = Buffer.from(request.block_hex, 'hex')
  const put = await client.block.put(block)
  answer.put = put.toString()
  answer.put_dag_pb = (await client.block.put(Buffer.from(request.dag_pb_hex, 'hex'), { format: 'dag-pb' })).toString()
  answer.got_hex = hex(await client.block.get(put))
  const stat = await client.block.stat(put)
  answer.stat = { cid: stat.cid.toString(), size: stat.size }

  answer.pinned = (await client.pin.add(put)).toString()
  answer.listed = (await all(client.pin.ls())).map(pinEntry)
  answer.listed_one = (await all(client.pin.ls({ paths: [put] }))).map(pinEntry)
  answer.removed = (await client.pin.rm(put)).toString()
  answer.listed_after = (await all(client.pin.ls({ type: 'recursive' }))).map(pinEntry)

  const id = await client.id()
  answer.id = { id: id.id.toString(), publicKey: id.publicKey, agentVersion: id.agentVersion, addresses: id.addresses }
  const version = await client.version()
  answer.version = { version: version.version, system: version.system }

  try {
    await client.block.get(request.absent)
    answer.absent_error = null
  } catch (err) {
    answer.absent_error = err.message
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`)
  process.exit(2)
})
