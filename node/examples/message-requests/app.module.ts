import { Module } from '@nestjs/common';
import { JobwireModule } from 'jobwire/nestjs';

import { MESSAGE_REQUEST_QUEUE } from './jobs.js';
import { MessageRequestQueueService } from './message-request-queue.service.js';
import { MessageRequestEvents } from './message-request.events.js';
import { MessageRequestProcessor } from './message-request.processor.js';
import { MessageRequestController } from './message-requests.controller.js';

@Module({
  imports: [
    JobwireModule.registerQueue({
      name: MESSAGE_REQUEST_QUEUE,
      defaultJobOptions: {
        removeOnComplete: 100,
        removeOnFail: 50,
        attempts: 3,
        backoff: { type: 'exponential', delay: 2000 },
        delay: 0, // Process immediately by default
      },
    }),
  ],
  controllers: [MessageRequestController],
  providers: [MessageRequestQueueService, MessageRequestProcessor, MessageRequestEvents],
})
export class MessageRequestsModule {}

@Module({
  imports: [
    JobwireModule.forRoot({ connection: process.env.JOBWIRE_URL ?? 'jobwire://127.0.0.1:7400' }),
    MessageRequestsModule,
  ],
})
export class AppModule {}
