"""A tiny grounding dataset in the project's layout, for trainer and script tests."""

import numpy as np

from data_rgnet import RGNetDatasetWriter

# A tiny RGNet configuration that reads the tiny dataset below (16-d frames, 24-d tokens, 0.5 s per frame).
TINY_CONFIG = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "ffn_dim": 64,
    "num_decoder_layers": 2,
    "num_text_to_video_layers": 1,
    "num_encoder_layers": 1,
    "video_feature_dim": 16,
    "pooled_text_dim": 16,
    "text_feature_dim": 24,
    "max_window_frames": 16,
    "max_text_tokens": 8,
    "seconds_per_frame": 0.5,
    "top_k_windows": 5,
}


def build_tiny_dataset(
    path,
    *,
    video_dim=16,
    text_dim=24,
    num_videos=4,
    num_frames=60,
    queries_per_video=4,
    seconds_per_frame=0.5,
    seed=0,
    splits=("train", "validation"),
):
    """Videos of `num_frames` random frames with a planted bump per query; returns the dataset path."""
    rng = np.random.default_rng(seed)
    with RGNetDatasetWriter(path, metadata={"seconds_per_frame": seconds_per_frame}) as writer:
        for split in splits:
            for video in range(num_videos):
                video_id = f"{split}_video{video}"
                frames = rng.normal(size=(num_frames, video_dim)).astype(np.float32)
                for query in range(queries_per_video):
                    start = int(rng.integers(0, num_frames - 8))
                    length = int(rng.integers(2, 8))
                    signature = rng.normal(size=video_dim).astype(np.float32)
                    frames[start : start + length] += 2 * signature
                    writer.add_query(
                        split,
                        {
                            "query_id": f"{video_id}_q{query}",
                            "query": f"event {query} of video {video}",
                            "video_id": video_id,
                            "duration": num_frames * seconds_per_frame,
                            "timestamps": [start * seconds_per_frame, (start + length) * seconds_per_frame],
                            "text_features": rng.normal(size=(int(rng.integers(2, 6)), text_dim)).astype(np.float32),
                            "sentence_embedding": signature,
                        },
                    )
                writer.add_video(video_id, frames)
    return path
