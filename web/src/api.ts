// The REST API client. Every request carries X-Requested-With, which the server requires on
// state-changing requests made with the session cookie (CSRF protection).

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Called when the server says the session is gone (401). */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void) {
  onUnauthorized = f;
}

export async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const headers: Record<string, string> = { 'X-Requested-With': 'thingmq', Accept: 'application/json' };
  let body: string | undefined;
  if (init.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(init.body);
  }
  let resp: Response;
  try {
    resp = await fetch(path, { method: init.method ?? 'GET', headers, body, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Is thingmq running?');
  }
  if (resp.status === 204) return undefined as T;
  const text = await resp.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = text;
  }
  if (!resp.ok) {
    const e = (data ?? {}) as { code?: string; message?: string };
    if (resp.status === 401 && path !== '/api/v1/login') onUnauthorized();
    throw new ApiError(resp.status, e.code ?? 'error', e.message ?? `HTTP ${resp.status}`);
  }
  return data as T;
}

export interface Me {
  name: string | null;
  role: 'admin' | 'viewer';
  via: 'open' | 'key' | 'session';
}

export interface Counter {
  name: string;
  help: string;
  kind: string;
  value: number;
}

export interface Overview {
  version: string;
  uptime_secs: number;
  connections: number;
  sessions: number;
  subscriptions: number;
  retained: number;
  counters: Counter[];
}

export interface Page<T> {
  items: T[];
  total: number;
  page: number;
  per_page: number;
}

export interface Connection {
  peer: string;
  username: string | null;
  protocol: string;
  keep_alive: number;
  connected_at_ms: number;
  internal: boolean;
}

export interface ClientSummary {
  client_id: string;
  connected: boolean;
  connection: Connection | null;
  queued: number;
  inflight: number;
}

export interface Subscription {
  filter: string;
  share_group: string | null;
  qos: number;
  no_local: boolean;
  retain_as_published: boolean;
  identifier: number | null;
}

export interface SubscriptionListing extends Subscription {
  client_id: string;
}

export interface ClientDetail extends ClientSummary {
  subscriptions: Subscription[];
}

export interface RetainedInfo {
  topic: string;
  qos: number;
  size: number;
  content_type: string | null;
  expires_in_secs: number | null;
}

export interface RetainedMessage extends RetainedInfo {
  payload: string | null;
  payload_base64: string;
}

export interface WsEndpoint {
  port: number;
  path: string;
  tls: boolean;
}

export interface Product {
  productKey: string;
  name: string;
  nodeType: string;
  validation: string;
  /** Gateways may register its devices with `thing/sub/register`. */
  dynamicRegister: boolean;
  createdMs: number;
  properties: number;
  events: number;
  services: number;
}

/** A TSL data type: `specs` holds strings (min/max/step/unit), enum labels, or struct members. */
export interface DataType {
  type: string;
  specs?: Record<string, unknown> | Param[];
}

export interface Param {
  identifier: string;
  name?: string;
  dataType: DataType;
}

export interface TslProperty extends Param {
  accessMode?: string;
}

export interface TslService {
  identifier: string;
  name?: string;
  callType?: string;
  inputData?: Param[];
  outputData?: Param[];
}

export interface Tsl {
  properties?: TslProperty[];
  events?: { identifier: string; name?: string; type?: string; outputData?: Param[] }[];
  services?: TslService[];
}

export interface ProductDetail extends Product {
  tsl: Tsl;
}

export interface Device {
  productKey: string;
  deviceName: string;
  enabled: boolean;
  online: boolean;
  tags: Record<string, string>;
  createdMs: number;
  lastOnlineMs: number | null;
  lastIp: string | null;
}

export interface Shadow {
  reported: Record<string, { value: unknown; time: number }>;
  desired: Record<string, unknown>;
  delta: Record<string, unknown>;
  version: number;
}

/** Path segments of a device's API routes. */
export function devicePath(pk: string, dn: string): string {
  return `/api/v1/devices/${encodeURIComponent(pk)}/${encodeURIComponent(dn)}`;
}
