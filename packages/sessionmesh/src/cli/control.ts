import { existsSync, unlinkSync } from 'node:fs'
import { createConnection, createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { UsageError } from './system.js'

/**
 * The control socket of `sessionmesh up` on `port`. Keyed by the port, since only one
 * `up` can serve a port, so `sessionmesh restart --port P` finds it without a pid file.
 */
export function controlPath(port: number): string {
  return join(tmpdir(), `sessionmesh-${port}.sock`)
}

/** Version of the line protocol on the control socket; a mismatch is refused, not guessed at. */
const PROTOCOL = 1

/** A request on the control socket: one JSON line. */
interface ControlRequest {
  v: number
  command: 'restart' | 'status'
}

/** The answer: one JSON line, then the server closes the connection. */
export interface ControlReply {
  v: number
  ok: boolean
  message: string
  nodes?: unknown
}

/** What the running `up` does for each command. */
export type ControlHandlers = Record<
  ControlRequest['command'],
  () => Promise<Omit<ControlReply, 'v'>>
>

/** Listens on {@link controlPath}; a socket left by a killed `up` is removed first. */
export async function serveControl(port: number, handlers: ControlHandlers): Promise<Server> {
  const path = controlPath(port)
  if (existsSync(path)) {
    if (await answers(path))
      throw new UsageError(`another sessionmesh up is running on port ${port}`)
    unlinkSync(path)
  }
  const server = createServer((socket) => {
    let buffer = ''
    socket.setEncoding('utf8')
    socket.on('error', () => {})
    socket.on('data', async (chunk: string) => {
      buffer += chunk
      const end = buffer.indexOf('\n')
      if (end < 0) return
      socket.pause()
      const reply = await handle(buffer.slice(0, end), handlers)
      socket.end(`${JSON.stringify({ v: PROTOCOL, ...reply })}\n`)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => resolve())
  })
  return server
}

async function handle(line: string, handlers: ControlHandlers): Promise<Omit<ControlReply, 'v'>> {
  let request: Partial<ControlRequest>
  try {
    request = JSON.parse(line) as Partial<ControlRequest>
  } catch {
    return { ok: false, message: 'not a JSON line' }
  }
  if (request.v !== PROTOCOL)
    return { ok: false, message: `protocol ${request.v} is not ${PROTOCOL}` }
  const handler =
    request.command && Object.hasOwn(handlers, request.command)
      ? handlers[request.command]
      : undefined
  if (!handler) return { ok: false, message: `unknown command ${String(request.command)}` }
  try {
    return await handler()
  } catch (error) {
    return { ok: false, message: error instanceof Error ? error.message : String(error) }
  }
}

/** Sends `command` to the `up` serving `port` and returns its reply. */
export async function sendControl(
  port: number,
  command: ControlRequest['command'],
): Promise<ControlReply> {
  const path = controlPath(port)
  return new Promise((resolve, reject) => {
    const socket = createConnection(path)
    let data = ''
    socket.setEncoding('utf8')
    socket.once('connect', () => socket.write(`${JSON.stringify({ v: PROTOCOL, command })}\n`))
    socket.on('data', (chunk: string) => {
      data += chunk
    })
    socket.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED') {
        reject(
          new UsageError(
            `no sessionmesh up is running on port ${port} (nothing listens on ${path})`,
          ),
        )
      } else reject(error)
    })
    socket.once('end', () => {
      try {
        resolve(JSON.parse(data) as ControlReply)
      } catch {
        reject(new Error(`unreadable reply from ${path}: ${data}`))
      }
    })
  })
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(path)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}
