// The three job types of the message-requests service, as in its BullMQ version.
export const MESSAGE_REQUEST_QUEUE = 'MessageRequestQueue';

export interface UserToken {
  id: string;
  tenant: string;
}

export interface CreateMessageRequestRequest {
  channel: string;
  text: string;
}

export interface MessageRequestJobs {
  'create-message-request': {
    user: UserToken;
    request: CreateMessageRequestRequest;
    options?: { idempotencyKey?: string };
  };
  'send-message-request': { messageRequestId: string; tenant: string };
  'retry-failed-message-request': { messageRequestId: string; tenant: string; retryReason: string };
}

export type MessageRequestJobName = keyof MessageRequestJobs;

/** Options a caller may pass, in BullMQ units (ms). */
export interface QueueCallOptions {
  idempotencyKey?: string;
  delay?: number;
  priority?: number;
}
