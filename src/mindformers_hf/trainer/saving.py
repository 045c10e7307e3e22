"""Saving and resuming for the Trainer: model folders, checkpoints (`checkpoint-N`, written atomically and
rotated as transformers does), trainer state, and loading them back. The file formats are in
checkpointing.py; the hub push of each save in hub_push.py.

Reads from the Trainer: args, model, processing_class, optimizer, lr_scheduler, scaler, _mixed,
callback_handler, state, control.
"""
import os

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..utils import logger, warn_once
from . import checkpointing as ckpt
from . import distributed as dist
from . import sharding
from .callbacks import ExportableState


class SavingMixin:
    def save_model(self, output_dir=None, _internal_call=False):
        """Rank 0 writes (`args.should_save`); the other ranks hold the same weights and return at once. As in
        transformers' data-parallel path nothing here synchronises: `if trainer.is_world_process_zero():
        trainer.save_model()` must not wait for ranks that never call it. A rank that reads the folder next
        waits for rank 0 itself (transformers' scripts call `accelerator.wait_for_everyone()` there)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        # a tensor-parallel model is gathered first, by every rank of its group (as transformers' DTensor save)
        tp_layout = sharding.layout(self)
        if self.args.should_save or tp_layout is not None:
            if self._mixed is not None:  # save float32 weights, as transformers does under AMP
                self._mixed.full_precision()
                try:
                    self._save_gathered(output_dir, tp_layout)
                finally:
                    self._mixed.to_compute()
            else:
                self._save_gathered(output_dir, tp_layout)

    def _save_gathered(self, output_dir, tp_layout):
        state = sharding.gathered_state_dict(self.model, tp_layout) if tp_layout is not None else None
        if self.args.should_save:
            self._save(output_dir, state)

    def _save(self, output_dir, state_dict=None):
        os.makedirs(output_dir, exist_ok=True)
        logger.info(f"Saving model checkpoint to {output_dir}")
        if state_dict is not None:  # a tensor-parallel model's gathered weights
            self.model.save_pretrained(output_dir, state_dict=state_dict)
        else:
            self.model.save_pretrained(output_dir)  # a PEFT model writes its adapter files
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(output_dir)
        ckpt.write_json(os.path.join(output_dir, ckpt.TRAINING_ARGS_NAME), self.args.to_dict())

    def _save_checkpoint(self):
        self.store_flos()
        run_dir = self.args.output_dir
        output_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.state.best_global_step:
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.exists(best_dir):
                self.state.best_model_checkpoint = best_dir
        # whole tensors first, from every rank (collectives under ZeRO / tensor parallelism); then rank 0 writes
        tp_layout = sharding.layout(self)
        model_state = None
        if tp_layout is not None:
            if self._mixed is not None:
                self._mixed.full_precision()
            try:
                model_state = sharding.gathered_state_dict(self.model, tp_layout)
            finally:
                if self._mixed is not None:
                    self._mixed.to_compute()
        optimizer_arrays = None if self.args.save_only_model else ckpt.optimizer_arrays(self.optimizer, tp_layout)
        if self.args.should_save:  # rank 0 writes; the others wait so that no rank runs ahead of the files
            with ckpt.atomic_folder(output_dir) as tmp:
                if model_state is not None:
                    self._save(tmp, model_state)
                else:
                    self.save_model(tmp, _internal_call=True)
                if not self.args.save_only_model:
                    ckpt.save_optimizer(self.optimizer, tmp, optimizer_arrays)
                    ckpt.write_json(os.path.join(tmp, ckpt.SCHEDULER_NAME), self.lr_scheduler.state_dict())
                    if self.scaler is not None:
                        ckpt.write_json(os.path.join(tmp, ckpt.SCALER_NAME), self.scaler.state_dict())
                    ckpt.write_json(os.path.join(tmp, ckpt.RNG_STATE_NAME), ckpt.rng_state())
                for cb in [cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)]:
                    name = type(cb).__name__
                    if isinstance(self.state.stateful_callbacks.get(name), list):
                        self.state.stateful_callbacks[name].append(cb.state())
                    else:
                        self.state.stateful_callbacks[name] = cb.state()
                ckpt.save_trainer_state(self.state, os.path.join(tmp, ckpt.TRAINER_STATE_NAME))
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
            if self.args.push_to_hub and getattr(self.args.hub_strategy, "value", self.args.hub_strategy) == "every_save":
                self._push_from_checkpoint(output_dir)
        dist.barrier()

    def save_state(self):
        if self.args.should_save:
            ckpt.save_trainer_state(self.state, os.path.join(self.args.output_dir, ckpt.TRAINER_STATE_NAME))

    def _load_from_checkpoint(self, checkpoint):
        """Model weights from a checkpoint folder: the full model, or a PEFT model's adapter."""
        adapter = os.path.join(checkpoint, "adapter_model.safetensors")
        if os.path.isfile(adapter) and getattr(self.model, "_hf_peft_config_loaded", False):
            # a model with native adapters (model.add_adapter): the checkpoint's weights into its active adapter
            self.model.load_adapter(checkpoint, self.model.active_adapters()[0], is_trainable=True, hotswap=True)
        elif os.path.isfile(adapter) and hasattr(self.model, "load_adapter"):
            adapter_name = getattr(self.model, "active_adapter", "default")
            self.model.load_adapter(checkpoint, adapter_name, is_trainable=True)
        elif hasattr(self.model, "load_checkpoint_folder"):
            self.model.load_checkpoint_folder(checkpoint)
        else:
            raise ValueError(f"Can't load weights from {checkpoint}: the model has neither load_adapter nor "
                             "load_checkpoint_folder")

    def _load_optimizer_and_scheduler(self, checkpoint):
        if not os.path.isfile(os.path.join(checkpoint, ckpt.OPTIMIZER_NAME)):
            warn_once(f"{checkpoint} has no optimizer state (saved with save_only_model?): the optimizer and "
                      "schedule restart")
            return
        ckpt.load_optimizer(self.optimizer, checkpoint, sharding.layout(self))
        self.lr_scheduler.load_state_dict(ckpt.read_json(os.path.join(checkpoint, ckpt.SCHEDULER_NAME)))
        scaler_path = os.path.join(checkpoint, ckpt.SCALER_NAME)
        if self.scaler is not None and os.path.isfile(scaler_path):
            self.scaler.load_state_dict(ckpt.read_json(scaler_path))

    def _load_rng_state(self, checkpoint):
        path = os.path.join(checkpoint, ckpt.RNG_STATE_NAME)
        if os.path.isfile(path):
            ckpt.set_rng_state(ckpt.read_json(path))

    def _load_callback_state(self):
        if not self.args.restore_callback_states_from_checkpoint:
            return
        for cb in self.callback_handler.callbacks + [self.control]:
            if not isinstance(cb, ExportableState):
                continue
            saved = self.state.stateful_callbacks.get(type(cb).__name__)
            if isinstance(saved, list):
                saved = saved[-1] if saved else None
            if saved:
                for key, value in saved.get("args", {}).items():
                    setattr(cb, key, value)
                for key, value in saved.get("attributes", {}).items():
                    setattr(cb, key, value)

    def log_metrics(self, split, metrics):
        logger.info(f"***** {split} metrics *****")
        width = max((len(k) for k in metrics), default=0)
        for key in sorted(metrics):
            logger.info(f"  {key: <{width}} = {metrics[key]}")

    def save_metrics(self, split, metrics, combined=True):
        ckpt.write_json(os.path.join(self.args.output_dir, f"{split}_results.json"), metrics)
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            combined_metrics = ckpt.read_json(path) if os.path.isfile(path) else {}
            combined_metrics.update(metrics)
            ckpt.write_json(path, combined_metrics)
