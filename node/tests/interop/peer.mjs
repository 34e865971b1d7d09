// A stock js-libp2p peer for the node's interop test. It dials the Grapevine node given on the
// command line, subscribes to a room topic, reports the first message it receives, then publishes
// bytes that are not a valid record and reports that too. One JSON object per line on stdout.
//
// Usage: node peer.mjs <multiaddr of the Grapevine node, with /p2p/> <topic>

import { createHash } from 'node:crypto'

// Every js-libp2p release from 2.10 on calls Promise.withResolvers, which Node 20 lacks.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { gossipsub } = await import('@chainsafe/libp2p-gossipsub')
const { multiaddr } = await import('@multiformats/multiaddr')

const [target, topic] = process.argv.slice(2)
const report = (event) => process.stdout.write(JSON.stringify(event) + '\n')
const giveUp = setTimeout(() => { report({ event: 'timeout' }); process.exit(1) }, 30_000)

const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({
      allowPublishToZeroTopicPeers: true,
      globalSignaturePolicy: 'StrictSign',
      // The same content-addressed ids as Grapevine, so gossip (IHAVE/IWANT) matches.
      msgIdFn: (message) => createHash('sha256').update(message.data).digest()
    })
  }
})

let received = false
node.services.pubsub.addEventListener('message', async (event) => {
  if (received || event.detail.topic !== topic) return
  received = true
  report({ event: 'received', bytes: event.detail.data.length })
  await node.services.pubsub.publish(topic, new TextEncoder().encode('not a grapevine envelope'))
  await node.services.pubsub.publish(topic, Uint8Array.from([0xa1, 0x61, 0x63, 0x43, 1, 2, 3]))
  report({ event: 'published' })
  setTimeout(async () => {
    clearTimeout(giveUp)
    await node.stop()
    report({ event: 'stopped' })
    process.exit(0)
  }, 2_000)
})

node.services.pubsub.subscribe(topic)
await node.dial(multiaddr(target))
report({ event: 'connected', peer: node.peerId.toString() })
