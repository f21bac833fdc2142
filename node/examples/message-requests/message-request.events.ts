import { Logger } from '@nestjs/common';
import { OnQueueEvent, QueueEventsHost, QueueEventsListener } from 'jobwire/nestjs';

import { MESSAGE_REQUEST_QUEUE } from './jobs.js';

/**
 * Follows the queue's events from the broker (whichever process ran the jobs), as a
 * `@QueueEventsListener` of `@nestjs/bullmq` does.
 */
@QueueEventsListener(MESSAGE_REQUEST_QUEUE)
export class MessageRequestEvents extends QueueEventsHost {
  private readonly logger = new Logger(MessageRequestEvents.name);
  readonly completedIds: string[] = [];
  failedForGood = 0;

  @OnQueueEvent('completed')
  onCompleted({ jobId }: { jobId: string }): void {
    this.completedIds.push(jobId);
    this.logger.debug(`job ${jobId} completed`);
  }

  @OnQueueEvent('failed')
  onFailed({ jobId, failedReason }: { jobId: string; failedReason: string }): void {
    this.failedForGood += 1;
    this.logger.warn(`job ${jobId} failed for good: ${failedReason}`);
  }

  @OnQueueEvent('lagged')
  onLagged({ dropped }: { dropped: number | null }): void {
    this.logger.warn(`missed ${dropped ?? 'an unknown number of'} queue events`);
  }
}
