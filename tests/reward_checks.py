"""Checks every reward family passes, in one place."""

import torch


def check_gradients_and_batch_invariance(reward, images: torch.Tensor, prompts: list[str], atol=1e-5, rtol=0.0):
    """Gradients of the batch's scores reach the pixels, and each image scored alone gets the score
    it got in the batch."""
    images = images.detach().requires_grad_(True)
    batched = reward(images, prompts).reward
    batched.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    single = torch.cat([reward(images[i : i + 1].detach(), prompts[i]).reward for i in range(len(images))])
    torch.testing.assert_close(batched.detach(), single, atol=atol, rtol=rtol)
