import { createHash } from 'node:crypto'

/** The backend's SQL, by operation, for one table. */
export type Statements = ReturnType<typeof statements>

/**
 * A name per statement, unique to its text (the table and the notify setting are
 * in it): two backends on one pool never give one name to two statements.
 */
export function statementNames(sql: Statements): Record<keyof Statements, string> {
  const names = {} as Record<keyof Statements, string>
  for (const key of Object.keys(sql) as Array<keyof Statements>) {
    const digest = createHash('sha256').update(sql[key]).digest('hex').slice(0, 16)
    names[key] = `sessionmesh_${key}_${digest}`
  }
  return names
}

/** Every statement the backend runs on table `t` (quoted), with or without notifications. */
export function statements(t: string, notify: boolean) {
  // `$n` after the common parameters: the channel and the payload, when notifying.
  const announce = (from: string, channelAt: number) =>
    notify
      ? `SELECT pg_notify($${channelAt}::text, $${channelAt + 1}::text) FROM ${from}`
      : `SELECT 1 FROM ${from}`
  // True while the server's clock is before the call's deadline (a parameter, NULL
  // for none). Checked where the row is decided on, so that a statement that sat
  // in a stalled connection or queue past its deadline applies nothing.
  const onTime = (n: number) =>
    `($${n}::float8 IS NULL OR extract(epoch FROM clock_timestamp()) * 1000 < $${n}::float8)`
  const capped = (created: string) =>
    `CASE WHEN $7::bigint > 0 THEN LEAST($6::bigint, ${created} + $7::bigint) ELSE $6::bigint END`
  // Parameters of a write: 1 id, 2 set (jsonb), 3 unset, 4 replace, 5 now,
  // 6 expiresAt, 7 maxLifetime, 8 userId, 9 user agent, 10 ip, 11 deadline,
  // [12 reseal (update only)]. A write notifies nothing itself: its `changed` event
  // follows the commit (notifier.ts says why). An update writes the
  // device fields it is given and keeps the others, and rewrites each reseal key
  // that still holds its `from` (both: the encryption layer, after a key rotation).
  const expired = 's.expires_at <= $5::bigint'
  return {
    get: `SELECT fields, created_at, last_seen_at, expires_at, user_id, user_agent, ip FROM ${t}
      WHERE id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint`,
    // An expired row (session or tombstone) is replaced as if absent; a live
    // tombstone fails the conflict's WHERE, so nothing is written and no row returns.
    create: `INSERT INTO ${t} AS s (id, fields, created_at, last_seen_at, expires_at, user_id, user_agent, ip)
      SELECT $1::text, $2::jsonb - $3::text[], $5::bigint, $5::bigint, ${capped('$5::bigint')},
        $8::text, $9::text, $10::text
      WHERE ${onTime(11)}
      ON CONFLICT (id) DO UPDATE SET
        fields = CASE WHEN ${expired} OR $4::boolean THEN EXCLUDED.fields
          ELSE (s.fields || $2::jsonb) - $3::text[] END,
        created_at = CASE WHEN ${expired} THEN EXCLUDED.created_at ELSE s.created_at END,
        user_agent = CASE WHEN ${expired} THEN EXCLUDED.user_agent ELSE s.user_agent END,
        ip = CASE WHEN ${expired} THEN EXCLUDED.ip ELSE s.ip END,
        last_seen_at = EXCLUDED.last_seen_at,
        expires_at = CASE WHEN ${expired} THEN EXCLUDED.expires_at ELSE ${capped('s.created_at')} END,
        user_id = EXCLUDED.user_id
      WHERE (s.fields IS NOT NULL OR ${expired}) AND ${onTime(11)}
      RETURNING s.id`,
    update: `UPDATE ${t} AS s SET
        fields = (CASE WHEN $4::boolean THEN $2::jsonb ELSE s.fields || $2::jsonb END - $3::text[])
          || COALESCE((SELECT jsonb_object_agg(r.key, r.value->1) FROM jsonb_each($12::jsonb) r
            WHERE s.fields->r.key = r.value->0), '{}'::jsonb),
        last_seen_at = $5::bigint,
        expires_at = ${capped('s.created_at')},
        user_id = $8,
        user_agent = COALESCE($9::text, s.user_agent),
        ip = COALESCE($10::text, s.ip)
      WHERE s.id = $1 AND s.fields IS NOT NULL AND s.expires_at > $5::bigint AND ${onTime(11)}
      RETURNING s.id`,
    // Parameters: 1 id, 2 now, 3 expiresAt, 4 maxLifetime.
    touch: `UPDATE ${t} SET last_seen_at = $2::bigint,
        expires_at = CASE WHEN $4::bigint > 0 THEN LEAST($3::bigint, created_at + $4::bigint) ELSE $3::bigint END
      WHERE id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint
      RETURNING 1`,
    // Parameters: 1 id, 2 now, 3 tombstone ttl, 4 deadline [, channel, payload].
    destroy: `WITH d AS (
      INSERT INTO ${t} AS s (id, fields, created_at, last_seen_at, expires_at)
      SELECT $1::text, NULL::jsonb, $2::bigint, $2::bigint, $2::bigint + $3::bigint
      WHERE ${onTime(4)}
      ON CONFLICT (id) DO UPDATE SET fields = NULL, user_id = NULL, user_agent = NULL, ip = NULL,
        last_seen_at = EXCLUDED.last_seen_at, expires_at = EXCLUDED.expires_at
      WHERE ${onTime(4)}
      RETURNING s.id
    ) ${announce('d', 5)}`,
    listUser: `SELECT id, created_at, last_seen_at, expires_at, user_id, user_agent, ip FROM ${t}
      WHERE user_id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint ORDER BY created_at, id`,
    // Parameters: 1 user, 2 now, 3 the session logging in. Oldest first.
    others: `SELECT id FROM ${t}
      WHERE user_id = $1 AND fields IS NOT NULL AND expires_at > $2::bigint AND id <> $3
      ORDER BY created_at, id`,
    // Parameters: 1 user, 2 except, 3 now, 4 tombstone ttl, 5 deadline [, channel, reason, caller].
    // Rows are locked in id order so that two revocations of one user cannot deadlock.
    destroyUser: `WITH victims AS (
      SELECT id, expires_at FROM ${t}
      WHERE user_id = $1 AND fields IS NOT NULL AND id IS DISTINCT FROM $2::text AND ${onTime(5)}
      ORDER BY id FOR UPDATE
    ), d AS (
      UPDATE ${t} AS s SET fields = NULL, user_id = NULL, user_agent = NULL, ip = NULL,
        last_seen_at = $3::bigint, expires_at = $3::bigint + $4::bigint
      FROM victims WHERE s.id = victims.id
      RETURNING s.id, victims.expires_at > $3::bigint AS live
    ) SELECT id, live${
      notify
        ? `, pg_notify($6::text, json_strip_nulls(json_build_object('v', 1, 'type', 'destroyed', 'sid', id, 'reason', $7::text, 'by', $8::text))::text)`
        : ''
    } FROM d`,
    // Parameters: 1 channel, 2 the events' payloads (text[]).
    notifyChanged: 'SELECT pg_notify($1::text, p) FROM unnest($2::text[]) AS p',
    count: `SELECT count(*) AS n FROM ${t} WHERE fields IS NOT NULL AND expires_at > $1::bigint`,
    ids: `SELECT id FROM ${t} WHERE fields IS NOT NULL AND expires_at > $1::bigint`,
    clear: `DELETE FROM ${t}`,
    // SKIP LOCKED: a row a request is writing right now is left for the next sweep
    // rather than waited on; the outer condition re-checks it under the lock.
    sweep: `DELETE FROM ${t} WHERE id IN (
      SELECT id FROM ${t} WHERE expires_at <= $1::bigint LIMIT $2::int FOR UPDATE SKIP LOCKED
    ) AND expires_at <= $1::bigint`,
  }
}
