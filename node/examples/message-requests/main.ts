// `make serve` in the repository, then: node build/examples/message-requests/main.js
// (JOBWIRE_URL and PORT override the broker and the HTTP port).
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';

import { AppModule } from './app.module.js';

const app = await NestFactory.create(AppModule);
app.enableShutdownHooks();
await app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1');
process.stdout.write(`message-requests listening on ${await app.getUrl()}\n`);
