package tiercache

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// job is a keyspace's background work, owned by the Cache: a write-behind
// flusher, a counter flusher. run loops until its ctx ends; drain, called
// by Stop once run has returned, finishes what is left (the flush on Stop)
// within Stop's ctx.
type job struct {
	name  string // for errors: "keyspace %q write-behind"
	run   func(ctx context.Context)
	drain func(ctx context.Context) error // nil: nothing to finish
}

// jobs runs the Cache's jobs: those added before Start start with it, the
// others at once.
type jobs struct {
	mu      sync.Mutex // protects started, stopped, list, ctx, cancel
	started bool
	stopped bool
	list    []job
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the run loops
}

// add registers j, starting it at once when the jobs have started. It
// returns ErrClosed after stop.
func (js *jobs) add(j job) error {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.stopped {
		return ErrClosed
	}
	js.list = append(js.list, j)
	if js.started {
		js.launch(j)
	}
	return nil
}

// start starts every job added so far.
func (js *jobs) start() {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.started || js.stopped {
		return
	}
	js.started = true
	js.ctx, js.cancel = context.WithCancel(context.Background())
	for _, j := range js.list {
		js.launch(j)
	}
}

// launch runs j's loop; js.mu is held and js started.
func (js *jobs) launch(j job) {
	ctx := js.ctx
	js.wg.Go(func() { j.run(ctx) })
}

// halt ends every run loop and waits for them; it reports the jobs, or
// nil if they were halted already.
func (js *jobs) halt(ctx context.Context) ([]job, error) {
	js.mu.Lock()
	if js.stopped {
		js.mu.Unlock()
		return nil, nil
	}
	js.stopped = true
	list := js.list
	if js.cancel != nil {
		js.cancel()
	}
	js.mu.Unlock()
	done := make(chan struct{})
	go func() {
		js.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return list, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for background jobs: %w", ctx.Err())
	}
}

// stop ends every run loop, waits for them, then drains each job within ctx.
func (js *jobs) stop(ctx context.Context) error {
	list, err := js.halt(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, j := range list {
		if j.drain == nil {
			continue
		}
		if err := j.drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", j.name, err))
		}
	}
	return errors.Join(errs...)
}
